import { TEST_LISTENER_KINDS } from '../../operator/api/types.ts';
import { kubectl, waitFor } from '../support/cluster.ts';
import {
  applyEndpoint,
  applyMock,
  createInjectedNamespace,
  helm,
  helmInstall,
  type Json,
  kubectlJson,
  reportNodeFigures,
  runScriptPod,
} from './support/node.ts';

/**
 * spec.testListeners on the real node (issue 16 item 5): the webhook injects the bad listeners and mounts the
 * test-servers Secret, the NetworkPolicy admits their ports, the Service <endpoint>-bad reaches them, and a Node
 * client in another pod refuses each one with the error that names the fault, while it reaches the normal one.
 */
const SYSTEM_NS = 'mtls-system';
const NS = 'bad-listeners-team';
const UPSTREAM = 8080;
const STRICT = 8443;
const FIRST_TEST_PORT = 9441;
const PROBE_CREDENTIALS = 'probe-credentials';

/** Run in a pod: each attempt once, on a fresh connection. Prints {name: `http <status>` or the error code}. */
const PROBE_SCRIPT = `
  const https = require('https'), fs = require('fs');
  const creds = (f) => fs.readFileSync('/creds/' + f);
  const attempts = JSON.parse(process.env.ATTEMPTS);
  const one = (a) => new Promise((done) => {
    const req = https.request({ host: a.host, port: a.port, path: '/probe', agent: false, timeout: 5000,
      servername: a.sni, ca: creds('ca.crt'), minVersion: a.minVersion, maxVersion: a.maxVersion,
      ...(a.cert ? { cert: creds('tls.crt'), key: creds('tls.key') } : {}) },
      (res) => { res.resume(); res.on('end', () => done('http ' + res.statusCode)); });
    // A TLS alert can surface as EPROTO with OpenSSL's reason in the message (the image's Node did so).
    req.on('error', (e) => done(e.code === 'EPROTO' ? 'EPROTO ' + e.message : e.code || e.message));
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })));
    req.end();
  });
  (async () => { const out = {}; for (const a of attempts) out[a.name] = await one(a); console.log(JSON.stringify(out)); })();`;

/** The protocol_version alert, as Node names it: its own code, or EPROTO with OpenSSL's reason. */
const PROTOCOL_VERSION_ALERT = /^(ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION|EPROTO .*alert protocol version)/;

const port = (kind: (typeof TEST_LISTENER_KINDS)[number]) => FIRST_TEST_PORT + TEST_LISTENER_KINDS.indexOf(kind);

describe('bad listeners on the real node', () => {
  afterAll(async () => {
    await kubectl(['delete', 'namespace', NS, '--wait=false']).catch(() => undefined);
    await helm(['uninstall', 'mtls-operator', '-n', SYSTEM_NS, '--wait']).catch(() => undefined);
  });

  it('a client pod refuses every bad listener of an injected pod and reaches the normal one', async () => {
    await helmInstall();
    await createInjectedNamespace(NS);
    await applyEndpoint(NS, 'shop', {
      podSelector: { matchLabels: { app: 'shop-mock' } },
      upstreamPort: UPSTREAM,
      listeners: [{ mode: 'strict', port: STRICT }],
      clients: [{ name: 'caller' }],
      testListeners: TEST_LISTENER_KINDS.map((kind) => ({ kind, port: port(kind) })),
    });
    await waitFor('the test-servers Secret', () => kubectlJson(['get', 'secret', 'shop-test-servers', '-n', NS]), {
      timeoutMs: 60_000,
    });
    const issued: Json = await waitFor<Json>(
      'the client Secret',
      () => kubectlJson(['get', 'secret', 'shop-client-caller', '-n', NS]),
      {
        timeoutMs: 60_000,
      },
    );
    await kubectl(
      ['apply', '-f', '-'],
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: { name: PROBE_CREDENTIALS, namespace: NS },
        data: issued.data,
      }),
    );
    const policy: Json = await waitFor<Json>(
      'the NetworkPolicy',
      () => kubectlJson(['get', 'networkpolicy', 'shop-mtls-only', '-n', NS]),
      {
        timeoutMs: 60_000,
      },
    );
    expect(policy.spec.ingress[0].ports.map((p: Json) => p.port)).toEqual(
      expect.arrayContaining(TEST_LISTENER_KINDS.map(port)),
    );
    await applyMock({ name: 'shop-mock', namespace: NS, port: UPSTREAM });
    const pod: Json = await waitFor(
      'one Ready shop-mock pod',
      async () => {
        const pods = (await kubectlJson(['get', 'pods', '-n', NS, '-l', 'app=shop-mock'])).items as Json[];
        return pods.find((p) => p.status?.conditions?.some((c: Json) => c.type === 'Ready' && c.status === 'True'));
      },
      { timeoutMs: 120_000, intervalMs: 250 },
    );
    // The bad listeners through their Service (its name is what a client in another namespace would use; the
    // cluster IP, not DNS, keeps the test independent of the node's DNS), the strict listener on the pod.
    const service: Json = await kubectlJson(['get', 'service', 'shop-bad', '-n', NS]);
    const host: string = service.spec.clusterIP;
    const sni = `shop-bad.${NS}.svc`;
    expect(service.spec.ports.map((p: Json) => p.port)).toEqual(TEST_LISTENER_KINDS.map(port));
    const attempts = [
      { name: 'strict with the client certificate', port: STRICT, cert: true, host: pod.status.podIP },
      { name: 'ExpiredCertificate', port: port('ExpiredCertificate') },
      { name: 'UntrustedCA', port: port('UntrustedCA') },
      { name: 'WrongHost', port: port('WrongHost') },
      { name: 'TLS12Only, client requires TLS 1.3', port: port('TLS12Only'), minVersion: 'TLSv1.3' },
      { name: 'TLS12Only, client allows TLS 1.2', port: port('TLS12Only') },
      { name: 'TLS13Only, client limited to TLS 1.2', port: port('TLS13Only'), maxVersion: 'TLSv1.2' },
      { name: 'ClientCAMismatch with the client certificate', port: port('ClientCAMismatch'), cert: true },
    ].map((a) => ({ host, sni, ...a }));
    const output = await runScriptPod({
      name: 'bad-probe',
      namespace: NS,
      script: PROBE_SCRIPT,
      env: { ATTEMPTS: JSON.stringify(attempts) },
      credentialsSecret: PROBE_CREDENTIALS,
      labels: { app: 'bad-probe' },
    });
    const outcomes = JSON.parse(output) as Record<string, string>;
    reportNodeFigures(`bad listeners over the pod network: ${JSON.stringify(outcomes)}`);
    expect(outcomes).toEqual({
      'strict with the client certificate': 'http 200',
      ExpiredCertificate: 'CERT_HAS_EXPIRED',
      UntrustedCA: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
      WrongHost: 'ERR_TLS_CERT_ALTNAME_INVALID',
      'TLS12Only, client requires TLS 1.3': expect.stringMatching(PROTOCOL_VERSION_ALERT),
      // Accepting TLS 1.2 is not wrong in itself: the answer says what was accepted, never the upstream's.
      'TLS12Only, client allows TLS 1.2': 'http 421',
      'TLS13Only, client limited to TLS 1.2': expect.stringMatching(PROTOCOL_VERSION_ALERT),
      // Closed without an answer: Node's https reports "socket hang up".
      'ClientCAMismatch with the client certificate': 'ECONNRESET',
    });
  });
});
