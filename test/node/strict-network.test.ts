import { SIDECAR_ADMIN_PORT, SIDECAR_CONTAINER } from '../../operator/api/injection.ts';
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
  runScriptPod,
  steadyLoad,
} from './support/node.ts';

/**
 * Strict on the pod network (issue 14): with the endpoint's NetworkPolicy and kube-router enforcing it, no pod
 * reaches the mock around its sidecar; the sidecar runs as a native sidecar that starts before the mock and
 * outlives it, so a rolling restart under mTLS load loses nothing.
 */
const SYSTEM_NS = 'mtls-system';
const NS = 'guarded-team';
const UPSTREAM = 8080;
const STRICT = 8443;

/**
 * Run in a pod: each attempt in ATTEMPTS once, on a fresh connection, 3 s at most (a policy rejects or drops
 * what it does not admit). Prints {attempt: outcome}: `http <status>`, or the error code.
 */
const PROBE_SCRIPT = `
  const http = require('http'), https = require('https'), fs = require('fs');
  const creds = (f) => fs.readFileSync('/creds/' + f);
  const attempts = JSON.parse(process.env.ATTEMPTS);
  const one = (a) => new Promise((done) => {
    const options = { host: a.host, port: a.port, path: '/probe', agent: false, timeout: 3000 };
    const tls = a.kind === 'plain' ? undefined : { servername: a.sni, ca: creds('ca.crt'), ...(a.kind === 'tls+cert' ? { cert: creds('tls.crt'), key: creds('tls.key') } : {}) };
    const req = (tls ? https : http).request({ ...options, ...tls }, (res) => { res.resume(); res.on('end', () => done('http ' + res.statusCode)); });
    req.on('error', (e) => done(e.code || e.message)); req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' }))); req.end();
  });
  (async () => { const out = {}; for (const a of attempts) out[a.name] = await one(a); console.log(JSON.stringify(out)); })();`;

const json = kubectlJson;

async function mockPod(): Promise<Json> {
  return waitFor(
    'one Ready guarded-mock pod',
    async () => {
      const pods = (await json(['get', 'pods', '-n', NS, '-l', 'app=guarded-mock'])).items.filter(
        (pod: Json) => !pod.metadata.deletionTimestamp,
      );
      const ready = pods.filter((pod: Json) =>
        pod.status?.conditions?.some((c: Json) => c.type === 'Ready' && c.status === 'True'),
      );
      return pods.length === 1 && ready.length === 1 ? ready[0] : undefined;
    },
    { timeoutMs: 120_000, intervalMs: 250 },
  );
}

function attemptsAgainst(podIp: string) {
  const sni = `guarded-strict.${NS}.svc`;
  return [
    { name: 'plain HTTP to podIP:upstreamPort', kind: 'plain', host: podIp, port: UPSTREAM },
    { name: 'TLS without a certificate to the strict listener', kind: 'tls', host: podIp, port: STRICT, sni },
    { name: 'TLS with the issued certificate', kind: 'tls+cert', host: podIp, port: STRICT, sni },
    { name: 'the admin port (kubelet probes, Prometheus)', kind: 'plain', host: podIp, port: SIDECAR_ADMIN_PORT },
  ];
}

/** A copy of the client Secret, not owned by the endpoint: the probes still have it after the endpoint is deleted. */
const PROBE_CREDENTIALS = 'probe-credentials';
let probes = 0;
async function probeFromPod(podIp: string): Promise<Record<string, string>> {
  const output = await runScriptPod({
    name: `probe-${++probes}`,
    namespace: NS,
    script: PROBE_SCRIPT,
    env: { ATTEMPTS: JSON.stringify(attemptsAgainst(podIp)) },
    credentialsSecret: PROBE_CREDENTIALS,
    labels: { app: 'probe' },
  });
  return JSON.parse(output) as Record<string, string>;
}

const seconds = (a: string, b: string) => (Date.parse(b) - Date.parse(a)) / 1000;

describe('strict on the real pod network', () => {
  afterAll(async () => {
    await kubectl(['delete', 'namespace', NS, '--wait=false']).catch(() => undefined);
    await helm(['uninstall', 'mtls-operator', '-n', SYSTEM_NS, '--wait']).catch(() => undefined);
  });

  let podIp = '';

  it('starts the sidecar as a native sidecar before the mock, and admits only TLS on the pod network', async () => {
    await helmInstall();
    await createInjectedNamespace(NS);
    await applyEndpoint(NS, 'guarded', {
      podSelector: { matchLabels: { app: 'guarded-mock' } },
      upstreamPort: UPSTREAM,
      listeners: [{ mode: 'strict', port: STRICT }],
      clients: [{ name: 'caller' }],
    });
    await waitFor('the NetworkPolicy', () => json(['get', 'networkpolicy', 'guarded-mtls-only', '-n', NS]), {
      timeoutMs: 60_000,
    });
    await waitFor('the client Secret', () => clientView('guarded-client-caller', NS), { timeoutMs: 60_000 });
    const issued = await json(['get', 'secret', 'guarded-client-caller', '-n', NS]);
    await kubectl(
      ['apply', '-f', '-'],
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: { name: PROBE_CREDENTIALS, namespace: NS },
        data: issued.data,
      }),
    );
    await applyMock({
      name: 'guarded-mock',
      namespace: NS,
      port: UPSTREAM,
      adjust: (deployment) => (deployment.spec.template.spec.terminationGracePeriodSeconds = 10),
    });
    const pod = await mockPod();
    podIp = pod.status.podIP;

    const sidecar = pod.status.initContainerStatuses.find((c: Json) => c.name === SIDECAR_CONTAINER);
    const mock = pod.status.containerStatuses.find((c: Json) => c.name === 'mock');
    const created = pod.metadata.creationTimestamp;
    const sidecarStarted = sidecar.state.running.startedAt;
    const mockStarted = mock.state.running.startedAt;
    // kubelet starts the mock only after the sidecar's startup probe passed (timestamps have 1 s resolution).
    expect(sidecar.started).toBe(true);
    expect(Date.parse(mockStarted)).toBeGreaterThanOrEqual(Date.parse(sidecarStarted));
    expect(pod.metadata.annotations['kubectl.kubernetes.io/default-container']).toBe('mock');

    const outcomes = await probeFromPod(podIp);
    expect(outcomes).toEqual({
      // kube-router rejects (ECONNREFUSED); other enforcers drop (a timeout). Either way no HTTP answer.
      'plain HTTP to podIP:upstreamPort': expect.not.stringMatching(/^http /),
      'TLS without a certificate to the strict listener': expect.not.stringMatching(/^http 200$/),
      'TLS with the issued certificate': 'http 200',
      'the admin port (kubelet probes, Prometheus)': 'http 404',
    });
    reportNodeFigures(
      `strict on the pod network: bypass attempts made 2 / succeeded 0 (plain ${outcomes['plain HTTP to podIP:upstreamPort']}, no certificate ${outcomes['TLS without a certificate to the strict listener']}); ` +
        `pod created to sidecar started ${seconds(created, sidecarStarted)} s, to mock started ${seconds(created, mockStarted)} s`,
    );
  });

  it('loses no request through a rolling restart of the mock under steady mTLS load', async () => {
    const ip: string = (await json(['get', 'service', 'guarded-strict', '-n', NS])).spec.clusterIP;
    const sni = `guarded-strict.${NS}.svc`;
    const { creds, trust } = await clientView('guarded-client-caller', NS);
    await waitFor('the strict Service to answer', async () => (await httpsTo(ip, sni, trust, creds)).status === 200, {
      timeoutMs: 60_000,
      intervalMs: 500,
    });
    const before: string = (await mockPod()).metadata.name;
    const load = steadyLoad(() => httpsTo(ip, sni, trust, creds, '/rolling'), 10);
    let result;
    try {
      await new Promise((resolve) => setTimeout(resolve, 3_000));
      await kubectl(['rollout', 'restart', 'deployment/guarded-mock', '-n', NS]);
      await kubectl(['rollout', 'status', 'deployment/guarded-mock', '-n', NS, '--timeout=180s']);
      // Until the old pod is gone: its preStop wait and the sidecar's drain are what is being tested.
      await waitFor(
        'the old pod to be gone',
        async () => ((await kubectl(['get', 'pods', '-n', NS, '-o', 'name'])).includes(before) ? undefined : true),
        { timeoutMs: 120_000, intervalMs: 500 },
      );
      await new Promise((resolve) => setTimeout(resolve, 3_000));
    } finally {
      result = await load.stop();
    }
    reportNodeFigures(
      `rolling restart (1 replica) at 10 req/s: requests sent ${result.sent} / failed ${result.failed}`,
    );
    expect(result.sent).toBeGreaterThan(50);
    expect(result.failures).toEqual([]);
    podIp = (await mockPod()).status.podIP;
  });

  it('reopens podIP:upstreamPort when the endpoint is deleted (its NetworkPolicy goes with it)', async () => {
    await kubectl(['delete', 'mtlsendpoint', 'guarded', '-n', NS, '--wait=true']);
    await waitFor(
      'the garbage collector to delete the NetworkPolicy',
      async () => ((await kubectl(['get', 'networkpolicy', '-n', NS, '-o', 'name'])).trim() === '' ? true : undefined),
      { timeoutMs: 120_000, intervalMs: 500 },
    );
    // kube-router applies a policy change within a few seconds; the probe retries until it sees it, bounded.
    const outcome = await waitFor(
      'the upstream port to answer',
      async () => {
        const outcomes = await probeFromPod(podIp);
        return outcomes['plain HTTP to podIP:upstreamPort'] === 'http 200' ? outcomes : undefined;
      },
      { timeoutMs: 90_000, intervalMs: 1_000 },
    );
    expect(outcome['plain HTTP to podIP:upstreamPort']).toBe('http 200');
  });
});
