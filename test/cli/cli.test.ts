import * as k8s from '@kubernetes/client-node';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { load } from 'js-yaml';
import type { CheckReport } from '../../operator/cli/check-view.ts';
import type { InspectReport } from '../../operator/cli/inspect-view.ts';
import type { RenewReport } from '../../operator/cli/renew-view.ts';
import type { StatusReport } from '../../operator/cli/status-view.ts';
import type { EndpointController } from '../../operator/controller/manager.ts';
import { LeaderElector } from '../../operator/kube/leader-election.ts';
import type { Webhook } from '../../operator/webhook/webhook.ts';
import { certInfo } from '../../operator/pki/certs.ts';
import {
  createTestNamespace,
  deleteTestNamespace,
  kubeConfig,
  kubeconfigPath,
  kubectl,
  waitFor,
} from '../support/cluster.ts';
import {
  core,
  createEndpoint,
  getEndpoint,
  installCrd,
  readSecret,
  secretText,
  waitReady,
} from '../support/endpoints.ts';
import { loopbackWebhook, startController } from '../support/operator.ts';

// The CLI as a user runs it (a process, the kubeconfig from KUBECONFIG) against the real API server and the
// in-process controller. Its views on hand-built snapshots: views.unit.test.ts; as a packed, installed
// package and a kubectl plugin: package.test.ts.

const CLI = new URL('../../operator/cli.ts', import.meta.url).pathname;

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function cli(args: string[], env: Record<string, string> = {}): Promise<Result> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      { env: { ...process.env, KUBECONFIG: kubeconfigPath(), ...env }, timeout: 90_000 },
      (err, stdout, stderr) => resolve({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

async function json<T>(args: string[], expectCode = 0): Promise<T> {
  const result = await cli([...args, '-o', 'json']);
  if (result.code !== expectCode) throw new Error(`exit ${result.code}: ${result.stderr}${result.stdout}`);
  return JSON.parse(result.stdout) as T;
}

const serialOf = async (namespace: string, secret: string) =>
  certInfo(secretText(await readSecret(namespace, secret), 'tls.crt')).serialNumber;

describe('kubectl mtls / mtls-operator CLI against the real API server', () => {
  let namespace: string;
  let controller: EndpointController;

  beforeAll(async () => {
    await installCrd();
    namespace = await createTestNamespace('cli');
    controller = await startController(namespace);
    await createEndpoint(namespace, 'payments', {
      podSelector: { matchLabels: { app: 'pay' } },
      upstreamPort: 8080,
      clients: [{ name: 'billing' }, { name: 'audit' }],
      certificates: { validity: '2h' },
    });
    // Two selected pods: one carrying the sidecar as the webhook injects it, one created without it.
    const pod = (name: string, sidecar: boolean): k8s.V1Pod => ({
      metadata: { name, labels: { app: 'pay' } },
      spec: {
        containers: [{ name: 'app', image: 'registry.invalid/app:1' }],
        ...(sidecar
          ? { initContainers: [{ name: 'mtls-sidecar', image: 'registry.invalid/mtls:1', restartPolicy: 'Always' }] }
          : {}),
      },
    });
    await core().createNamespacedPod({ namespace, body: pod('pay-injected', true) });
    await core().createNamespacedPod({ namespace, body: pod('pay-plain', false) });
    await waitReady(namespace, 'payments');
  }, 120_000);
  afterAll(async () => {
    await controller?.stop();
    await deleteTestNamespace(namespace);
  });

  it('status: conditions, each certificate, pods by injection and the Events, from the kubeconfig context', async () => {
    const status = await json<StatusReport>(['status', 'payments', '-n', namespace]);
    expect(status).toMatchObject({ namespace, name: 'payments', ready: 'True', upToDate: true, caRollover: null });
    expect(status.conditions.map((c) => c.type).sort()).toEqual(
      ['CARollover', 'Degraded', 'Issued', 'Ready', 'RenewBeforeTooShort'].sort(),
    );
    expect(status.certificates.map((c) => `${c.certificate}${c.client ? ` ${c.client}` : ''}`)).toEqual([
      'ca',
      'server',
      'client billing',
      'client audit',
    ]);
    expect(status.certificates[1]).toMatchObject({
      secretName: 'payments-server',
      serialNumber: await serialOf(namespace, 'payments-server'),
    });
    expect(status.pods).toEqual({ injected: ['pay-injected'], notInjected: ['pay-plain'], optedOut: [] });
    expect(status.events.map((e) => e.reason)).toEqual(expect.arrayContaining(['CAIssued', 'Issued']));

    // The table, and the namespace taken from the kubeconfig context when -n is absent.
    const kc = kubeConfig();
    const contextual = join(mkdtempSync(join(tmpdir(), 'cli-kubeconfig-')), 'config');
    const context = kc.getContextObject(kc.getCurrentContext())!;
    kc.contexts = kc.contexts.map((c) => (c.name === context.name ? { ...c, namespace } : c));
    writeFileSync(contextual, kc.exportConfig());
    const table = await cli(['status', 'payments'], { KUBECONFIG: contextual });
    rmSync(join(contextual, '..'), { recursive: true, force: true });
    expect(table.stderr).toBe('');
    expect(table.stdout).toContain(`MtlsEndpoint ${namespace}/payments\nReady: True (Ready)`);
    expect(table.stdout).toMatch(/Pods: 1 injected: pay-injected\n {2}1 selected but without the sidecar: pay-plain/);
  });

  it('inspect secret: the decoded certificate, its endpoint and client, the chain against the endpoint CA', async () => {
    const ep = await getEndpoint(namespace, 'payments');
    const report = await json<InspectReport>(['inspect', 'secret', 'payments-client-billing', '-n', namespace]);
    expect(report).toMatchObject({ endpoint: 'payments', certificate: 'client', client: 'billing', managed: true });
    const leaf = report.certificates.find((c) => c.key === 'tls.crt')!;
    expect(leaf).toMatchObject({ subject: 'CN=billing', serial: await serialOf(namespace, 'payments-client-billing') });
    expect(leaf.extendedKeyUsages).toEqual(['clientAuth']);
    expect(report.checks).toEqual([
      { check: 'tls.key matches tls.crt', ok: true, message: 'the private key belongs to the certificate' },
      expect.objectContaining({ check: 'within its validity', ok: true }),
      { check: 'chain', ok: true, message: `signed by CA ${ep.status!.ca!.serialNumber}, the endpoint's current CA` },
    ]);
    const server = await json<InspectReport>(['inspect', 'secret', 'payments-server', '-n', namespace]);
    expect(server.certificates.find((c) => c.key === 'tls.crt')!.dnsNames).toContain(
      `payments-strict.${namespace}.svc`,
    );
    const missing = await cli(['inspect', 'secret', 'nope', '-n', namespace]);
    expect(missing).toMatchObject({ code: 1, stdout: '' });
    expect(missing.stderr).toMatch(new RegExp(`^mtls-operator: Secret ${namespace}/nope not found`));
  });

  it('renew --server: re-issues that certificate alone, now, with an Event from the CLI and one from the controller', async () => {
    const before = {
      server: await serialOf(namespace, 'payments-server'),
      billing: await serialOf(namespace, 'payments-client-billing'),
    };
    const report = await json<RenewReport>(['renew', 'payments', '--server', '-n', namespace]);
    expect(report).toMatchObject({ endpoint: 'payments', target: 'server', waited: true, done: true });
    expect(report.requestedBy).not.toBe('an unknown user');
    const after = await serialOf(namespace, 'payments-server');
    expect(after).not.toBe(before.server);
    expect(report.certificates).toEqual([
      { certificate: 'server', previousSerial: before.server, serialNumber: after },
    ]);
    expect(await serialOf(namespace, 'payments-client-billing')).toBe(before.billing);
    const ep = await getEndpoint(namespace, 'payments');
    expect(ep.metadata?.annotations?.['mtls.operator.dev/renew-requested']).toBe(`server=${report.requestedAt}`);
    const events = await waitFor('both renewal Events', async () => {
      const list = await core().listNamespacedEvent({ namespace });
      const reasons = list.items.map((e) => `${e.reason}: ${e.message}`);
      return reasons.some((r) => r.startsWith('RenewRequested')) &&
        reasons.some((r) => r.startsWith('RenewedOnRequest'))
        ? reasons
        : undefined;
    });
    expect(events).toContainEqual(
      `RenewRequested: ${report.requestedBy} requested the renewal of server (mtls.operator.dev/renew-requested at ${report.requestedAt})`,
    );
    expect(events).toContainEqual(
      `RenewedOnRequest: Renewal of server requested at ${report.requestedAt} (annotation mtls.operator.dev/renew-requested): issued the server certificate into Secret payments-server`,
    );
    // Honoured once: the controller's next passes leave the new certificate alone.
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    expect(await serialOf(namespace, 'payments-server')).toBe(after);
  });

  it('renew --client NAME in YAML, the whole endpoint by default, and a client it does not have refused', async () => {
    const before = await serialOf(namespace, 'payments-client-audit');
    const result = await cli(['renew', 'payments', '--client', 'audit', '-n', namespace, '-o', 'yaml']);
    expect(result).toMatchObject({ code: 0, stderr: '' });
    const report = load(result.stdout) as RenewReport;
    expect(report).toMatchObject({ target: 'client/audit', done: true });
    expect(report.certificates[0]).toMatchObject({ certificate: 'client audit', previousSerial: before });
    expect(await serialOf(namespace, 'payments-client-audit')).toBe(report.certificates[0]!.serialNumber);

    const all = await json<RenewReport>(['renew', 'payments', '-n', namespace]);
    expect(all.done).toBe(true);
    expect(all.certificates.map((c) => c.certificate)).toEqual(['server', 'client billing', 'client audit']);
    const annotation = (await getEndpoint(namespace, 'payments')).metadata?.annotations?.[
      'mtls.operator.dev/renew-requested'
    ];
    expect(annotation?.split(',').map((e) => e.split('=')[0])).toEqual(['server', 'client/audit', 'all']);

    const refused = await cli(['renew', 'payments', '--client', 'nobody', '-n', namespace]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toBe(
      `mtls-operator: MtlsEndpoint ${namespace}/payments has no client "nobody" in spec.clients (it has: billing, audit)\n`,
    );
    const usage = await cli(['renew', 'payments', '--client', 'audit', '--server']);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/--client and --server exclude each other/);
  });

  it('credentials -o json: writes the files and names them', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cli-creds-'));
    try {
      const report = await json<{ cert: string; key: string; ca: string; curl: string }>([
        'credentials',
        'payments',
        'billing',
        '-n',
        namespace,
        '--out',
        dir,
        '--kubeconfig',
        kubeconfigPath(),
      ]);
      expect(report).toMatchObject({ cert: join(dir, 'tls.crt'), key: join(dir, 'tls.key'), ca: join(dir, 'ca.crt') });
      expect(statSync(report.key).mode & 0o777).toBe(0o600);
      expect(report.curl).toBe(
        `curl --cert ${report.cert} --key ${report.key} --cacert ${report.ca} https://payments-strict.${namespace}.svc/`,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a client team's narrower rights: status says what it could not read, renew says what it may not do", async () => {
    await kubectl(['create', 'serviceaccount', 'team-reader', '-n', namespace]);
    await kubectl([
      'create',
      'role',
      'reader',
      '--verb=get',
      '--resource=mtlsendpoints.mtls.operator.dev',
      '-n',
      namespace,
    ]);
    await kubectl([
      'create',
      'rolebinding',
      'reader',
      '--role=reader',
      `--serviceaccount=${namespace}:team-reader`,
      '-n',
      namespace,
    ]);
    const token = (await kubectl(['create', 'token', 'team-reader', '-n', namespace])).trim();
    const admin = kubeConfig();
    const reader = new k8s.KubeConfig();
    reader.loadFromOptions({
      clusters: admin.clusters,
      users: [{ name: 'team-reader', token }],
      contexts: [{ name: 'team', cluster: admin.getCurrentCluster()!.name, user: 'team-reader', namespace }],
      currentContext: 'team',
    });
    const dir = mkdtempSync(join(tmpdir(), 'cli-reader-'));
    try {
      writeFileSync(join(dir, 'config'), reader.exportConfig());
      const env = { KUBECONFIG: join(dir, 'config') };
      const status = await cli(['status', 'payments', '-o', 'json'], env);
      expect(status).toMatchObject({ code: 0, stderr: '' });
      const report = JSON.parse(status.stdout) as StatusReport;
      expect(report.ready).toBe('True');
      expect(report.unreadable).toEqual([
        expect.stringMatching(/^events: events is forbidden: .* cannot list resource "events" .*\(HTTP 403\)$/),
        expect.stringMatching(
          /^pods: pods is forbidden: User "system:serviceaccount:.*:team-reader" cannot list resource "pods" .*\(HTTP 403\)$/,
        ),
      ]);
      const renew = await cli(['renew', 'payments', '--server'], env);
      expect(renew.code).toBe(1);
      expect(renew.stderr).toMatch(
        /^mtls-operator: mtlsendpoints.mtls.operator.dev "payments" is forbidden: User "system:serviceaccount:.*:team-reader" cannot patch resource "mtlsendpoints" .* \(HTTP 403\)\n$/,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  describe('check', () => {
    let webhook: Webhook;
    let configurationName: string;
    let elector: LeaderElector;
    const lease = 'cli-test-leader';

    beforeAll(async () => {
      ({ webhook, configurationName } = await loopbackWebhook(namespace, `mtls-operator-cli-${namespace}`));
      await webhook.start();
      elector = new LeaderElector(kubeConfig(), { namespace, name: lease, identity: 'cli-test-operator' });
      let leading!: () => void;
      const led = new Promise<void>((resolve) => (leading = resolve));
      void elector.run({ onStartedLeading: leading, onStoppedLeading: () => undefined });
      await led;
    });
    afterAll(async () => {
      await elector?.stop();
      await webhook?.stop();
      await kubeConfig()
        .makeApiClient(k8s.AdmissionregistrationV1Api)
        .deleteMutatingWebhookConfiguration({ name: configurationName })
        .catch(() => undefined);
    });

    const args = () => [
      'check',
      '-n',
      namespace,
      '--operator-namespace',
      namespace,
      '--lease-name',
      lease,
      '--webhook-configuration',
      configurationName,
    ];

    it('passes a working installation, and fails (exit 1) on certificates expiring within --within days', async () => {
      const report = await json<CheckReport>([...args(), '--within', '0.01']);
      expect(report.problems).toBe(0);
      expect(report.checks.map((c) => c.message)).toEqual([
        'mtlsendpoints.mtls.operator.dev serves v1alpha1 (storage v1alpha1)',
        'mtlscredentialrequests.mtls.operator.dev serves v1alpha1 (storage v1alpha1)',
        expect.stringMatching(
          new RegExp(`^cli-test-operator leads \\(Lease ${namespace}/${lease} renewed \\d+s ago\\)$`),
        ),
        `MutatingWebhookConfiguration ${configurationName} has a caBundle`,
        expect.stringMatching(/^https:\/\/127\.0\.0\.1:\d+\/mutate-pods answers over TLS verified with the caBundle$/),
        `1 MtlsEndpoint(s) in namespace ${namespace}, all Ready`,
        'none expires within 0.01 day(s)',
      ]);
      const expiring = await json<CheckReport>([...args(), '--within', '1'], 1);
      expect(expiring.problems).toBe(1);
      expect(expiring.checks.find((c) => !c.ok)!.message).toMatch(
        new RegExp(`^3 expire within 1 day\\(s\\): ${namespace}/payments server \\(serial [0-9a-f]+\\) expires`),
      );
    });

    it('fails when no operator leads and the webhook does not answer, saying where to look', async () => {
      await elector.stop(); // releases the Lease: no holder
      await webhook.stop();
      const result = await cli([...args(), '--within', '0.01']);
      expect(result.code).toBe(1);
      expect(result.stdout).toContain(
        `× operator running and leading: Lease ${namespace}/${lease} has no holder: the last leader released it and none took over\n    hint: kubectl -n ${namespace} get pods,deployments`,
      );
      expect(result.stdout).toMatch(/× webhook reachable: https:\/\/127\.0\.0\.1:\d+\/mutate-pods: .*ECONNREFUSED/);
      expect(result.stdout).toMatch(/Status check results are ×: 2 problem\(s\)\n$/);
    });
  });
});
