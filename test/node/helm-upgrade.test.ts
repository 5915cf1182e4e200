import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { kubectl, waitFor } from '../support/cluster.ts';
import { notesCommands, runNotesCommand } from '../support/helm-notes.ts';
import {
  applyEndpoint,
  applyMock,
  CHART,
  clientView,
  createInjectedNamespace,
  helm,
  httpsTo,
  type Json,
  kubectlJson,
  nodeState,
  REPO_ROOT,
  reportNodeFigures,
  steadyLoad,
} from './support/node.ts';

/**
 * Upgrade safety as a cluster operator meets it: the previous chart (from git) installed, then `helm upgrade` to
 * this one under steady mTLS traffic, a rollback, and `helm uninstall` then install keeping every endpoint's CA.
 * Both charts run the image built from this checkout: the chart and its CRD are what changes here.
 */
const SYSTEM_NS = 'mtls-system';
const NS = 'upgrade-team';
/** Where NOTES' commands run, with a mock named as they name it. */
const NOTES_NS = 'notes-team';
const CRD = 'mtlsendpoints.mtls.operator.dev';
/** The last commit whose chart shipped the CRD in crds/ (0.1.0); MTLS_UPGRADE_FROM=<rev> picks another. */
const PREVIOUS_CHART_REV = process.env.MTLS_UPGRADE_FROM ?? 'a951b3ec8ec057c2962f6a85661610785342a04d';
const run = promisify(execFile);
const json = kubectlJson;
const sni = `payments-strict.${NS}.svc`;

/** The chart (and the crds/ it links) as they were at `rev`, in a temporary folder. */
async function chartAt(rev: string): Promise<{ chart: string; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'previous-chart-'));
  await run('sh', [
    '-c',
    `git -C "$1" archive "$2" charts/mtls-operator crds | tar -x -C "$3"`,
    'sh',
    REPO_ROOT,
    rev,
    dir,
  ]);
  return { chart: join(dir, 'charts/mtls-operator'), dir };
}

const upgradeArgs = (chart: string, extra: string[] = []) => [
  'upgrade',
  'mtls-operator',
  chart,
  '-n',
  SYSTEM_NS,
  '--wait',
  '--timeout',
  '180s',
  ...extra,
];

const endpointReady = (namespace = NS) =>
  waitFor(
    `${namespace}/payments Ready`,
    async () =>
      (await json(['get', 'mtlsendpoint', 'payments', '-n', namespace])).status?.conditions?.some(
        (c: Json) => c.type === 'Ready' && c.status === 'True',
      ),
    { timeoutMs: 90_000 },
  );

describe('helm upgrade from the previous chart, rollback, uninstall and install again, on a real node', () => {
  let previous: { chart: string; dir: string };
  let ip = '';
  let ca = '';
  let caKeyBefore = '';
  const creds = () => clientView('payments-client-billing', NS).then((v) => v.creds);

  afterAll(async () => {
    await helm(['uninstall', 'mtls-operator', '-n', SYSTEM_NS, '--wait']).catch(() => undefined);
    for (const ns of [NS, NOTES_NS]) await kubectl(['delete', 'namespace', ns, '--wait=false']).catch(() => undefined);
    if (previous) rmSync(previous.dir, { recursive: true, force: true });
  });

  it('the previous chart serves an injected mock', async () => {
    previous = await chartAt(PREVIOUS_CHART_REV);
    await helm([
      'upgrade',
      '--install',
      'mtls-operator',
      previous.chart,
      '-n',
      SYSTEM_NS,
      '--create-namespace',
      '--wait',
      '--timeout',
      '180s',
    ]);
    await createInjectedNamespace(NS);
    await applyEndpoint(NS, 'payments', {
      podSelector: { matchLabels: { app: 'upgrade-mock' } },
      upstreamPort: 8080,
      clients: [{ name: 'billing' }],
    });
    await endpointReady();
    await applyMock({ name: 'upgrade-mock', namespace: NS, port: 8080 });
    await kubectl(['rollout', 'status', 'deployment/upgrade-mock', '-n', NS, '--timeout=120s']);
    ip = (await json(['get', 'service', 'payments-strict', '-n', NS])).spec.clusterIP;
    ca = (await clientView('payments-client-billing', NS)).trust;
    caKeyBefore = (await json(['get', 'secret', 'payments-ca', '-n', NS])).data['ca.key'];
    const client = await creds();
    await waitFor('the strict Service to answer', async () => (await httpsTo(ip, sni, ca, client)).status === 200, {
      timeoutMs: 60_000,
      intervalMs: 500,
    });
  });

  it('helm upgrade to this chart drops no request and takes the CRD into the release', async () => {
    const client = await creds();
    const load = steadyLoad(() => httpsTo(ip, sni, ca, client, '/upgrade'), 10);
    const started = Date.now();
    // The previous chart installed the CRD from crds/, which Helm does not own: the documented adoption.
    await helm(upgradeArgs(CHART, ['--take-ownership']));
    const upgradeMs = Date.now() - started;
    await new Promise((resolve) => setTimeout(resolve, 5_000));
    const result = await load.stop();
    reportNodeFigures(
      `helm upgrade from ${PREVIOUS_CHART_REV.slice(0, 7)} in ${upgradeMs} ms: requests sent ${result.sent} / failed ${result.failed}`,
    );
    expect(result.failures).toEqual([]);
    expect(result.sent).toBeGreaterThan(50);
    const crd = await json(['get', 'crd', CRD]);
    expect(crd.metadata.annotations).toMatchObject({
      'helm.sh/resource-policy': 'keep',
      'meta.helm.sh/release-name': 'mtls-operator',
      'meta.helm.sh/release-namespace': SYSTEM_NS,
    });
    const deployment = await json(['get', 'deployment', 'mtls-operator', '-n', SYSTEM_NS]);
    expect(deployment.status.updatedReplicas).toBe(2);
    expect(deployment.spec.template.spec.containers[0].args).toContain('--log-format=json');
  });

  it('a rollback to the previous chart keeps the CRD (resource-policy keep) and drops no request', async () => {
    const client = await creds();
    const load = steadyLoad(() => httpsTo(ip, sni, ca, client, '/rollback'), 10);
    await helm(['rollback', 'mtls-operator', '1', '-n', SYSTEM_NS, '--wait', '--timeout', '180s']);
    await new Promise((resolve) => setTimeout(resolve, 5_000));
    const result = await load.stop();
    reportNodeFigures(`helm rollback to the previous chart: requests sent ${result.sent} / failed ${result.failed}`);
    expect(result.failures).toEqual([]);
    expect(await kubectl(['get', 'crd', CRD, '-o', 'name'])).toContain(CRD);
    expect(await kubectl(['get', 'mtlsendpoint', 'payments', '-n', NS, '-o', 'name'])).toContain('payments');
    await helm(upgradeArgs(CHART));
  });

  it('helm uninstall then install keeps the endpoint CA; NOTES commands work as printed', async () => {
    await helm(['uninstall', 'mtls-operator', '-n', SYSTEM_NS, '--wait', '--timeout', '120s']);
    expect(await kubectl(['get', 'crd', CRD, '-o', 'name'])).toContain(CRD);
    expect((await json(['get', 'secret', 'payments-ca', '-n', NS])).data['ca.key']).toBe(caKeyBefore);
    // Injected pods keep serving while no operator runs.
    expect((await httpsTo(ip, sni, ca, await creds())).status).toBe(200);

    const notes = await helm(['install', 'mtls-operator', CHART, '-n', SYSTEM_NS, '--wait', '--timeout', '180s']);
    await endpointReady();
    expect((await json(['get', 'secret', 'payments-ca', '-n', NS])).data['ca.key']).toBe(caKeyBefore);
    expect((await httpsTo(ip, sni, ca, await creds())).status).toBe(200);

    // Every command NOTES prints, run as printed (<ns> and <your mock> filled in), in a namespace with a mock.
    await kubectl(['create', 'namespace', NOTES_NS]);
    await applyMock({ name: 'payments-mock', namespace: NOTES_NS, port: 8080 });
    const commands = notesCommands(notes).map((c) =>
      c.replaceAll('<ns>', NOTES_NS).replaceAll('<your mock>', 'payments-mock'),
    );
    expect(commands.length).toBeGreaterThanOrEqual(8);
    const { kubectl: kubectlBin, kubeconfig } = nodeState();
    const work = mkdtempSync(join(tmpdir(), 'notes-'));
    try {
      for (const command of commands) {
        // A person reads the credentials once the endpoint is Ready, as NOTES says.
        if (command.includes('get secret')) await endpointReady(NOTES_NS);
        await runNotesCommand(command, { bin: kubectlBin, kubeconfig }, work);
      }
      const files = await run('ls', [work]);
      expect(files.stdout.split('\n').filter(Boolean).sort()).toEqual(['ca.crt', 'tls.crt', 'tls.key']);
      await kubectl(['rollout', 'status', 'deployment/payments-mock', '-n', NOTES_NS, '--timeout=120s']);
      const pods = await json<{ items: Json[] }>(['get', 'pods', '-n', NOTES_NS, '-l', 'app=payments-mock']);
      expect(pods.items.some((pod) => pod.metadata.annotations?.['mtls.operator.dev/injected-by'] === 'payments')).toBe(
        true,
      );
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }, 300_000);
});
