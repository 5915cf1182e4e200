import * as k8s from '@kubernetes/client-node';
import { connect } from 'node:tls';
import { SIDECAR_CONTAINER, sidecarContainerOf } from '../../operator/api/injection.ts';
import { freePort } from '../../local/controlplane/local-control-plane.ts';
import { issueCA } from '../../operator/pki/issue.ts';
import { createTestNamespace, deleteTestNamespace, kubeConfig, kubeconfigPath, waitFor } from '../support/cluster.ts';
import { core, createEndpoint, installCrd } from '../support/endpoints.ts';
import { loopbackWebhook, type OperatorProcess, spawnOperator, waitHealthy } from '../support/operator.ts';

// A fresh install must inject from its first Ready pod: every replica, leader or not, makes the webhook
// configuration trust the certificate it serves, and reports ready only once it does.

const admission = () => kubeConfig().makeApiClient(k8s.AdmissionregistrationV1Api);
const caBundleOf = async (name: string) => {
  const bundle = (await admission().readMutatingWebhookConfiguration({ name })).webhooks?.[0]?.clientConfig.caBundle;
  return bundle ? Buffer.from(bundle, 'base64').toString('utf8') : '';
};

/** A TLS handshake as the API server makes it: trusting the caBundle alone, checking the name it dials. */
function handshake(port: number, caPem: string, servername?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, ca: caPem, ...(servername ? { servername } : {}) }, () => {
      const fingerprint = socket.getPeerCertificate().fingerprint256;
      socket.end();
      resolve(fingerprint);
    });
    socket.on('error', reject);
  });
}

const readyz = async (op: OperatorProcess) => {
  const res = await fetch(`http://127.0.0.1:${op.metricsPort}/readyz`);
  return { status: res.status, text: await res.text() };
};

describe('webhook: injection does not wait for a leader', () => {
  let namespace: string;
  const cleanup: (() => Promise<unknown>)[] = [];
  beforeAll(async () => {
    await installCrd();
    namespace = await createTestNamespace('wh-ready', { 'mtls.operator.dev/injection': 'enabled' });
    await createEndpoint(namespace, 'payments', {
      podSelector: { matchLabels: { app: 'payments-mock' } },
      upstreamPort: 8080,
    });
  });
  afterAll(async () => {
    for (const step of cleanup.reverse()) await step().catch(() => undefined);
    await deleteTestNamespace(namespace);
  });

  it('with no leader and no controller, a replica injects as soon as it is ready, and repairs a caBundle that stops verifying it', async () => {
    const { webhook, port, configurationName } = await loopbackWebhook(namespace, `mtls-operator-ready-${namespace}`, {
      verifyEveryMs: 200,
      retryMs: 200,
    });
    cleanup.push(
      () => webhook.stop(),
      () => admission().deleteMutatingWebhookConfiguration({ name: configurationName }),
    );
    expect(webhook.ready).toBe(false);
    await webhook.start();
    expect(webhook.ready).toBe(true);
    const ours = await caBundleOf(configurationName);
    await handshake(port, ours); // the URL's host is an IP: the certificate names it

    const pod = (name: string): k8s.V1Pod => ({
      metadata: { name, labels: { app: 'payments-mock' } },
      spec: { containers: [{ name: 'mock', image: 'registry.invalid/mock:1' }] },
    });
    const first = await core().createNamespacedPod({ namespace, body: pod('first') });
    expect(sidecarContainerOf(first)?.name).toBe(SIDECAR_CONTAINER);

    // Someone resets the caBundle (a re-install, a hand edit): the API server would no longer trust us.
    const foreign = await issueCA({
      endpoint: 'foreign',
      namespace,
      algorithm: 'ECDSA-P256',
      validityMs: 3_600_000,
      now: new Date(),
    });
    const config = await admission().readMutatingWebhookConfiguration({ name: configurationName });
    config.webhooks![0]!.clientConfig.caBundle = Buffer.from(foreign.certPem).toString('base64');
    await admission().replaceMutatingWebhookConfiguration({ name: configurationName, body: config });
    await waitFor('the replica to restore the caBundle', async () => (await caBundleOf(configurationName)) === ours, {
      timeoutMs: 10_000,
      intervalMs: 100,
    });
    await waitFor('the replica to be ready again', async () => webhook.ready);
    const second = await core().createNamespacedPod({ namespace, body: pod('second') });
    expect(sidecarContainerOf(second)?.name).toBe(SIDECAR_CONTAINER);
  });

  it('two replicas while another holds the lease: /readyz is false until the caBundle verifies what each serves', async () => {
    // Someone else leads, for an hour: neither process below becomes leader during this test.
    await kubeConfig()
      .makeApiClient(k8s.CoordinationV1Api)
      .createNamespacedLease({
        namespace,
        body: {
          metadata: { name: 'mtls-operator-leader' },
          spec: {
            holderIdentity: 'someone-else',
            leaseDurationSeconds: 3600,
            renewTime: new Date().toISOString().replace(/\.(\d{3})Z$/, '.$1000Z') as unknown as Date,
          },
        },
      });
    const configurationName = `mtls-operator-replicas-${namespace}`;
    cleanup.push(() => admission().deleteMutatingWebhookConfiguration({ name: configurationName }));
    const serverName = `mtls-operator-webhook.${namespace}.svc`;
    const replica = async () => {
      const webhookPort = await freePort();
      const op = await spawnOperator(
        kubeconfigPath(),
        namespace,
        [
          '--webhook-configuration',
          configurationName,
          '--webhook-port',
          String(webhookPort),
          '--webhook-address',
          '127.0.0.1',
        ],
        [],
        { webhook: true },
      );
      cleanup.push(async () => op.child.kill('SIGKILL'));
      await waitHealthy(op);
      return { op, webhookPort };
    };

    // Before the chart's configuration exists, nothing can trust this replica: not ready, and it says why.
    const a = await replica();
    const notReady = await waitFor('/readyz to explain', async () => {
      const r = await readyz(a.op);
      return r.status === 503 && /not found/.test(r.text) ? r.text : undefined;
    });
    expect(notReady).toMatch(/MutatingWebhookConfiguration .* not found/);

    // The chart's configuration, as Helm creates it: no caBundle.
    await admission().createMutatingWebhookConfiguration({
      body: {
        metadata: { name: configurationName },
        webhooks: [
          {
            name: 'inject.mtls.operator.dev',
            admissionReviewVersions: ['v1'],
            sideEffects: 'None',
            failurePolicy: 'Ignore',
            // No namespace has this label: the API server never calls this Service-backed webhook here.
            namespaceSelector: { matchLabels: { 'readiness-test': 'never' } },
            rules: [{ apiGroups: [''], apiVersions: ['v1'], operations: ['CREATE'], resources: ['pods'] }],
            clientConfig: {
              service: { name: 'mtls-operator-webhook', namespace, path: '/mutate-pods', port: 443 },
            },
          },
        ],
      },
    });
    // The moment it reports ready, the caBundle verifies the certificate it serves, under the Service's name.
    await waitFor('replica a to be ready', async () => (await readyz(a.op)).status === 200, {
      timeoutMs: 15_000,
      intervalMs: 50,
    });
    const bundle = await caBundleOf(configurationName);
    expect(bundle).toContain('BEGIN CERTIFICATE');
    const served = await handshake(a.webhookPort, bundle, serverName);
    const version = (await admission().readMutatingWebhookConfiguration({ name: configurationName })).metadata
      ?.resourceVersion;

    // A second replica finds the Secret and the caBundle in place: it writes nothing and serves the same.
    const b = await replica();
    await waitFor('replica b to be ready', async () => (await readyz(b.op)).status === 200, { timeoutMs: 15_000 });
    expect(await handshake(b.webhookPort, await caBundleOf(configurationName), serverName)).toBe(served);
    expect(
      (await admission().readMutatingWebhookConfiguration({ name: configurationName })).metadata?.resourceVersion,
    ).toBe(version);

    // Neither led: the lease is still someone else's.
    const lease = await kubeConfig()
      .makeApiClient(k8s.CoordinationV1Api)
      .readNamespacedLease({ name: 'mtls-operator-leader', namespace });
    expect(lease.spec?.holderIdentity).toBe('someone-else');
    expect(a.op.output.join('') + b.op.output.join('')).not.toContain('became leader');
  }, 90_000);
});
