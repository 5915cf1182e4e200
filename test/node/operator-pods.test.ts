import { X509Certificate } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { kubectl, waitFor } from '../support/cluster.ts';
import {
  applyEndpoint,
  applyMock,
  clientView,
  createInjectedNamespace,
  helm,
  helmInstall,
  httpsTo,
  type Json,
  kubectlJson,
  reportNodeFigures,
  secretData,
  steadyLoad,
} from './support/node.ts';

/**
 * The reliability suite's pod parts, on the real node: a CA rollover under traffic through kubelet's Secret
 * delivery, with the leading operator pod deleted (graceful) and then killed (no grace) while it rolls over.
 */
const SYSTEM_NS = 'mtls-system';
const NS = 'rollover-team';
const ROLLOVER_PHASE = 'mtls.operator.dev/ca-rollover-phase';
const json = kubectlJson;
const secretText = async (name: string, key: string) => (await secretData(name, NS))[key] ?? '';

async function leaderPod(): Promise<{ pod: string; holder: string }> {
  const pods: string[] = (
    await json(['get', 'pods', '-n', SYSTEM_NS, '-l', 'app.kubernetes.io/name=mtls-operator'])
  ).items
    .filter((pod: Json) => !pod.metadata.deletionTimestamp)
    .map((pod: Json) => pod.metadata.name);
  const holder: string =
    (await json(['get', 'lease', 'mtls-operator-leader', '-n', SYSTEM_NS])).spec.holderIdentity ?? '';
  const pod = pods.find((name) => holder.startsWith(`${name}-`));
  if (!pod) throw new Error(`no running pod holds the lease (holder ${holder || 'none'})`);
  return { pod, holder };
}

/** The operator process of a pod, found on the node by its HOSTNAME (the pod's name). */
async function operatorProcess(pod: string): Promise<number> {
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (!cmdline.includes('cli.js\0controller')) continue;
    const environ = await readFile(`/proc/${entry}/environ`, 'utf8').catch(() => '');
    if (environ.split('\0').includes(`HOSTNAME=${pod}`)) return Number(entry);
  }
  throw new Error(`no operator process of pod ${pod} on the node`);
}

/**
 * Takes the leader down, by deleting its pod (kubelet sends SIGTERM) or by SIGKILL of its process (no
 * chance to release the Lease), and returns how long until another operator holds the lease.
 */
async function replaceLeader(how: 'delete pod' | 'SIGKILL'): Promise<number> {
  const before = await leaderPod();
  const started = Date.now();
  if (how === 'delete pod') await kubectl(['delete', 'pod', before.pod, '-n', SYSTEM_NS, '--wait=false']);
  else process.kill(await operatorProcess(before.pod), 'SIGKILL');
  await waitFor(
    'another operator to lead',
    async () => {
      const now = await leaderPod().catch(() => undefined);
      return now && now.holder !== before.holder ? true : undefined;
    },
    { timeoutMs: 90_000, intervalMs: 250 },
  );
  return Date.now() - started;
}

describe('operator pods on the real node', () => {
  afterAll(async () => {
    await helm(['uninstall', 'mtls-operator', '-n', SYSTEM_NS, '--wait']).catch(() => undefined);
  });

  it('rolls the CA over under traffic while the leading pod is deleted and then killed: no failed request', async () => {
    // A CA rollover needs the new CA in every trust bundle before anything is signed by it: kubelet delivers a
    // Secret change within ~15 s here, so 20 s of propagation, and a CA short enough to roll over in the test.
    await helmInstall(['--set', 'controller.caPropagationDelay=20s']);
    await createInjectedNamespace(NS);
    await applyEndpoint(NS, 'rolling', {
      podSelector: { matchLabels: { app: 'rolling-mock' } },
      upstreamPort: 8080,
      listeners: [{ mode: 'strict', port: 8443 }],
      certificates: { validity: '100s', renewBefore: '60s', caValidity: '240s' },
      clients: [{ name: 'steady' }],
    });
    await waitFor('the client Secret', () => secretText('rolling-client-steady', 'tls.crt'), { timeoutMs: 60_000 });
    await applyMock({ name: 'rolling-mock', namespace: NS, port: 8080 });
    await kubectl(['rollout', 'status', 'deployment/rolling-mock', '-n', NS, '--timeout=120s']);
    const ip: string = (await json(['get', 'service', 'rolling-strict', '-n', NS])).spec.clusterIP;
    const sni = `rolling-strict.${NS}.svc`;
    const firstCa = new X509Certificate(await secretText('rolling-server', 'ca.crt')).serialNumber;

    // A client that re-reads its Secret (and trust bundle) every few seconds, as one with a mounted Secret does.
    let { creds, trust } = await clientView('rolling-client-steady', NS);
    await waitFor('the strict Service to answer', async () => (await httpsTo(ip, sni, trust, creds)).status === 200, {
      timeoutMs: 60_000,
      intervalMs: 500,
    });
    const refresh = setInterval(() => {
      void clientView('rolling-client-steady', NS).then(
        (view) => ({ creds, trust } = view),
        () => undefined,
      );
    }, 3_000);
    const load = steadyLoad(() => httpsTo(ip, sni, trust, creds, '/rollover'), 10);
    let gracefulTakeoverMs = 0;
    let killedTakeoverMs = 0;
    try {
      gracefulTakeoverMs = await replaceLeader('delete pod');
      await waitFor(
        'the CA rollover to start',
        async () => !!(await json(['get', 'secret', 'rolling-ca', '-n', NS])).metadata.annotations?.[ROLLOVER_PHASE],
        { timeoutMs: 300_000, intervalMs: 1_000 },
      );
      killedTakeoverMs = await replaceLeader('SIGKILL');
      await waitFor(
        'the rollover to finish on a new CA',
        async () => {
          const ca = await json(['get', 'secret', 'rolling-ca', '-n', NS]);
          const serial = new X509Certificate(Buffer.from(ca.data['ca.crt'], 'base64').toString()).serialNumber;
          return !ca.metadata.annotations?.[ROLLOVER_PHASE] && serial !== firstCa;
        },
        { timeoutMs: 300_000, intervalMs: 1_000 },
      );
      // Traffic after the rollover, with the client on the new CA's certificate.
      await new Promise((resolve) => setTimeout(resolve, 20_000));
    } finally {
      clearInterval(refresh);
    }
    const result = await load.stop();
    reportNodeFigures(
      `CA rollover on the node: requests sent ${result.sent} / failed ${result.failed}; leader pod deleted: takeover ${gracefulTakeoverMs} ms; leader process SIGKILLed mid-rollover: takeover ${killedTakeoverMs} ms`,
    );
    expect(result.failures).toEqual([]);
    // A graceful shutdown releases the Lease: the standby leads well before a lease (15 s) would expire.
    expect(gracefulTakeoverMs).toBeLessThan(10_000);
  }, 900_000);
});
