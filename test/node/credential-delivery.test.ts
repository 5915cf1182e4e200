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
 * Credentials delivered to the client's namespace (issue 16, items 1 and 3) on the real node, installed with
 * the chart (its RBAC): a pod in the client team's namespace mounts the Secret an MtlsCredentialRequest
 * delivered and reaches the strict Service of an endpoint in another namespace; a pod mounting the delivered CA
 * bundle ConfigMap reaches the standard Service; without a certificate the strict Service refuses.
 */
const SYSTEM_NS = 'mtls-system';
const SERVER_NS = 'delivery-payments';
const CLIENT_NS = 'delivery-billing';
const UPSTREAM = 8080;

/** Run in a pod: one HTTPS request per entry of ATTEMPTS; prints {name: outcome} (`http <status>` or the error). */
const PROBE_SCRIPT = `
  const https = require('https'), fs = require('fs');
  const attempts = JSON.parse(process.env.ATTEMPTS);
  const one = (a) => new Promise((done) => {
    const read = (f) => fs.readFileSync(f);
    const options = { host: a.ip, port: 443, path: '/from-' + a.name, agent: false, timeout: 5000, servername: a.host,
      ca: read(a.ca), ...(a.cert ? { cert: read('/creds/tls.crt'), key: read('/creds/tls.key') } : {}) };
    const req = https.request(options, (res) => { res.resume(); res.on('end', () => done('http ' + res.statusCode)); });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => done(e.code || e.message));
    req.end();
  });
  (async () => { const out = {}; for (const a of attempts) out[a.name] = await one(a); console.log(JSON.stringify(out)); })();`;

describe('credentials delivered to the client namespace, used by a pod there', () => {
  afterAll(async () => {
    for (const ns of [SERVER_NS, CLIENT_NS])
      await kubectl(['delete', 'namespace', ns, '--wait=false']).catch(() => undefined);
    await helm(['uninstall', 'mtls-operator', '-n', SYSTEM_NS, '--wait']).catch(() => undefined);
  });

  it('a pod in the client namespace reaches the strict Service with the delivered Secret, and the standard one with the bundle', async () => {
    await helmInstall();
    await createInjectedNamespace(SERVER_NS);
    await kubectl(['create', 'namespace', CLIENT_NS]);
    await applyEndpoint(SERVER_NS, 'payments', {
      podSelector: { matchLabels: { app: 'payments-mock' } },
      upstreamPort: UPSTREAM,
      listeners: [
        { mode: 'strict', port: 8443 },
        { mode: 'standard', port: 8444 },
      ],
      clients: [{ name: 'billing', allowedNamespaces: [CLIENT_NS] }],
      trustBundle: { allowedNamespaces: [CLIENT_NS] },
    });
    await applyMock({ name: 'payments-mock', namespace: SERVER_NS, port: UPSTREAM });
    const request = (name: string, client?: string) => ({
      apiVersion: 'mtls.operator.dev/v1alpha1',
      kind: 'MtlsCredentialRequest',
      metadata: { name, namespace: CLIENT_NS },
      spec: { endpoint: { namespace: SERVER_NS, name: 'payments' }, client },
    });
    await kubectl(
      ['apply', '-f', '-'],
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'List',
        items: [request('payments-billing', 'billing'), request('payments-ca')],
      }),
    );
    for (const name of ['payments-billing', 'payments-ca']) {
      await waitFor(
        `${CLIENT_NS}/${name} delivered`,
        async () => {
          const r = await kubectlJson(['get', 'mtlscredentialrequest', name, '-n', CLIENT_NS]);
          return r.status?.conditions?.some((c: Json) => c.type === 'Ready' && c.reason === 'Delivered')
            ? r
            : undefined;
        },
        { timeoutMs: 120_000, intervalMs: 500 },
      );
    }
    await waitFor(
      'a Ready payments-mock pod',
      async () =>
        (await kubectlJson(['get', 'pods', '-n', SERVER_NS, '-l', 'app=payments-mock'])).items.find((pod: Json) =>
          pod.status?.conditions?.some((c: Json) => c.type === 'Ready' && c.status === 'True'),
        ),
      { timeoutMs: 180_000, intervalMs: 500 },
    );
    // The Services' names are what a client verifies (SNI and the certificate); their cluster IPs are where it
    // connects, which keeps the test independent of the node's DNS.
    const service = async (name: string) => ({
      host: `${name}.${SERVER_NS}.svc`,
      ip: (await kubectlJson(['get', 'service', name, '-n', SERVER_NS])).spec.clusterIP as string,
    });
    const strict = await service('payments-strict');
    const standard = await service('payments-standard');
    const outcomes = JSON.parse(
      await runScriptPod({
        name: 'billing-client',
        namespace: CLIENT_NS,
        script: PROBE_SCRIPT,
        credentialsSecret: 'payments-billing',
        trustConfigMap: 'payments-ca',
        env: {
          ATTEMPTS: JSON.stringify([
            { name: 'strict-with-cert', ...strict, ca: '/creds/ca.crt', cert: true },
            { name: 'strict-without-cert', ...strict, ca: '/trust/ca.crt' },
            { name: 'standard-with-bundle', ...standard, ca: '/trust/ca.crt' },
          ]),
        },
      }),
    ) as Record<string, string>;
    expect(outcomes['strict-with-cert']).toBe('http 200');
    expect(outcomes['strict-without-cert']).not.toBe('http 200');
    expect(outcomes['standard-with-bundle']).toBe('http 200');
    reportNodeFigures(`credential delivery across namespaces: ${JSON.stringify(outcomes)}`);
  });
});
