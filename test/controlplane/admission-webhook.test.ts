import * as k8s from '@kubernetes/client-node';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { certificateToPem, generateKeyPair, issueCertificate, privateKeyToPem } from '../../operator/pki/x509.ts';
import { createTestNamespace, deleteTestNamespace, kubeConfig } from '../support/cluster.ts';

interface AdmissionReview {
  request: { uid: string; kind: { kind: string }; operation: string; object: k8s.V1Pod };
}

// The path the injector will use: the API server calls an HTTPS webhook on 127.0.0.1 for Pod CREATE.
describe('local control plane: mutating admission webhook on loopback', () => {
  let namespace: string;
  let server: Server;
  const reviews: AdmissionReview[] = [];
  const webhookName = `harness-webhook-${Date.now()}`;

  beforeAll(async () => {
    namespace = await createTestNamespace('harness-webhook', { 'harness-webhook': 'on' });
    const keys = await generateKeyPair('ECDSA-P256');
    const now = Date.now();
    const cert = await issueCertificate(
      {
        subject: 'CN=harness-webhook',
        publicKey: keys.publicKey,
        notBefore: new Date(now - 60_000),
        notAfter: new Date(now + 3_600_000),
        isCA: true,
        serverAuth: true,
        ipAddresses: ['127.0.0.1'],
      },
      { selfSigned: keys.privateKey },
    );
    server = createServer({ cert: certificateToPem(cert), key: await privateKeyToPem(keys.privateKey) }, (req, res) => {
      let body = '';
      req.on('data', (chunk: Buffer) => (body += chunk.toString()));
      req.on('end', () => {
        const review = JSON.parse(body) as AdmissionReview;
        reviews.push(review);
        const patch = [{ op: 'add', path: '/metadata/labels/harness-mutated', value: 'yes' }];
        res.setHeader('content-type', 'application/json');
        res.end(
          JSON.stringify({
            apiVersion: 'admission.k8s.io/v1',
            kind: 'AdmissionReview',
            response: {
              uid: review.request.uid,
              allowed: true,
              patchType: 'JSONPatch',
              patch: Buffer.from(JSON.stringify(patch)).toString('base64'),
            },
          }),
        );
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    await kubeConfig()
      .makeApiClient(k8s.AdmissionregistrationV1Api)
      .createMutatingWebhookConfiguration({
        body: {
          metadata: { name: webhookName },
          webhooks: [
            {
              name: 'harness.mtls.operator.dev',
              admissionReviewVersions: ['v1'],
              sideEffects: 'None',
              failurePolicy: 'Fail',
              namespaceSelector: { matchLabels: { 'harness-webhook': 'on' } },
              rules: [{ apiGroups: [''], apiVersions: ['v1'], operations: ['CREATE'], resources: ['pods'] }],
              clientConfig: {
                url: `https://127.0.0.1:${port}/mutate`,
                caBundle: Buffer.from(certificateToPem(cert)).toString('base64'),
              },
            },
          ],
        },
      });
  });

  afterAll(async () => {
    await kubeConfig()
      .makeApiClient(k8s.AdmissionregistrationV1Api)
      .deleteMutatingWebhookConfiguration({ name: webhookName })
      .catch(() => undefined);
    server?.close();
    await deleteTestNamespace(namespace);
  });

  it('is called on Pod CREATE and its patch is applied', async () => {
    const core = kubeConfig().makeApiClient(k8s.CoreV1Api);
    const created = await core.createNamespacedPod({
      namespace,
      body: {
        metadata: { name: 'probe', labels: { app: 'probe' } },
        spec: { containers: [{ name: 'probe', image: 'registry.invalid/probe:1' }] },
      },
    });
    expect(created.metadata?.labels?.['harness-mutated']).toBe('yes');
    const review = reviews.find((r) => r.request.object.metadata?.name === 'probe');
    expect(review?.request.operation).toBe('CREATE');
    expect(review?.request.kind.kind).toBe('Pod');
  });
});
