import { X509Certificate } from 'node:crypto';
import { WebhookServingCert } from '../../operator/webhook/serving-cert.ts';
import { createTestNamespace, deleteTestNamespace, kubeConfig } from '../support/cluster.ts';
import { readSecret, secretText } from '../support/endpoints.ts';

const DAY = 86_400_000;

describe("webhook: the operator's own serving certificate", () => {
  let namespace: string;
  beforeAll(async () => {
    namespace = await createTestNamespace('webhook-cert');
  });
  afterAll(() => deleteTestNamespace(namespace));

  it('is created once, reused by every replica, and renewed before it expires under the same CA', async () => {
    const options = { namespace, secretName: 'webhook-tls', dnsNames: ['mtls-operator-webhook.mtls-system.svc'] };
    const replicaA = new WebhookServingCert(kubeConfig(), options);
    const replicaB = new WebhookServingCert(kubeConfig(), options);
    const first = await replicaA.ensure();
    const second = await replicaB.ensure();
    expect(second.certPem).toBe(first.certPem);
    expect(new X509Certificate(first.certPem).checkIssued(new X509Certificate(first.caPem))).toBe(true);
    expect(new X509Certificate(first.certPem).subjectAltName).toContain('DNS:mtls-operator-webhook.mtls-system.svc');

    // Past its renewal time (a third of a year before expiry) the next check re-issues it.
    const later = new Date(first.renewalTime.getTime() + DAY);
    const renewed = await replicaB.ensure(later);
    expect(renewed.certPem).not.toBe(first.certPem);
    expect(renewed.caPem).toBe(first.caPem); // the caBundle in the webhook configuration stays valid
    expect(secretText(await readSecret(namespace, 'webhook-tls'), 'tls.crt')).toBe(renewed.certPem);
    expect(renewed.renewalTime.getTime()).toBeGreaterThan(later.getTime());
  });
});
