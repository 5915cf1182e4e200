import * as k8s from '@kubernetes/client-node';
import { X509Certificate } from 'node:crypto';
import { LeaderElector } from '../../operator/kube/leader-election.ts';
import { deploymentOwnerReference } from '../../operator/kube/owner.ts';
import { WebhookServingCert } from '../../operator/webhook/serving-cert.ts';
import { createTestNamespace, deleteTestNamespace, kubeConfig, waitFor } from '../support/cluster.ts';
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

  it("the Secret and the leader Lease are owned by the operator's Deployment, also when an older version made them", async () => {
    const apps = kubeConfig().makeApiClient(k8s.AppsV1Api);
    const coordination = kubeConfig().makeApiClient(k8s.CoordinationV1Api);
    const labels = { app: 'operator' };
    await apps.createNamespacedDeployment({
      namespace,
      body: {
        metadata: { name: 'mtls-operator' },
        spec: {
          replicas: 0,
          selector: { matchLabels: labels },
          template: {
            metadata: { labels },
            spec: { containers: [{ name: 'operator', image: 'registry.invalid/op:1' }] },
          },
        },
      },
    });
    const owner = await deploymentOwnerReference(kubeConfig(), namespace, 'mtls-operator');
    expect(owner).toMatchObject({ apiVersion: 'apps/v1', kind: 'Deployment', name: 'mtls-operator' });
    expect(await deploymentOwnerReference(kubeConfig(), namespace, 'absent', { attempts: 1 })).toBeUndefined();

    // Written by a version without owners: the next check adds it, and keeps the certificate.
    const options = { namespace, secretName: 'owned-tls', dnsNames: ['mtls-operator-webhook.mtls-system.svc'] };
    const before = await new WebhookServingCert(kubeConfig(), options).ensure();
    expect((await readSecret(namespace, 'owned-tls'))?.metadata?.ownerReferences).toBeUndefined();
    const after = await new WebhookServingCert(kubeConfig(), { ...options, ownerReferences: [owner!] }).ensure();
    expect(after.certPem).toBe(before.certPem);
    expect((await readSecret(namespace, 'owned-tls'))?.metadata?.ownerReferences).toEqual([owner]);

    // Same for the Lease, at its holder's next renewal.
    const timings = { leaseDurationMs: 2_000, renewDeadlineMs: 1_500, retryPeriodMs: 250 };
    const old = new LeaderElector(kubeConfig(), { namespace, name: 'owned-leader', identity: 'old', ...timings });
    void old.run({ onStartedLeading: () => {}, onStoppedLeading: () => {} });
    await waitFor('the old version to lead', () =>
      coordination.readNamespacedLease({ name: 'owned-leader', namespace }),
    );
    await old.stop();
    const next = new LeaderElector(kubeConfig(), {
      namespace,
      name: 'owned-leader',
      identity: 'new',
      ownerReferences: [owner!],
      ...timings,
    });
    void next.run({ onStartedLeading: () => {}, onStoppedLeading: () => {} });
    const lease = await waitFor('the new version to lead', async () => {
      const current = await coordination.readNamespacedLease({ name: 'owned-leader', namespace });
      return current.spec?.holderIdentity === 'new' ? current : undefined;
    });
    expect(lease.metadata?.ownerReferences).toEqual([owner]);
    await next.stop();
  });
});
