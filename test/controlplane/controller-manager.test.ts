import * as k8s from '@kubernetes/client-node';
import { createTestNamespace, deleteTestNamespace, kubeConfig, waitFor } from '../support/cluster.ts';

describe('local control plane: kube-controller-manager', () => {
  let namespace: string;
  beforeAll(async () => {
    namespace = await createTestNamespace('harness-kcm');
  });
  afterAll(() => deleteTestNamespace(namespace));

  it('turns a Deployment into a ReplicaSet and a Pod, and garbage-collects them with their owner', async () => {
    const apps = kubeConfig().makeApiClient(k8s.AppsV1Api);
    const core = kubeConfig().makeApiClient(k8s.CoreV1Api);
    const labels = { app: 'web' };
    await apps.createNamespacedDeployment({
      namespace,
      body: {
        metadata: { name: 'web' },
        spec: {
          replicas: 1,
          selector: { matchLabels: labels },
          template: { metadata: { labels }, spec: { containers: [{ name: 'web', image: 'registry.invalid/web:1' }] } },
        },
      },
    });
    const replicaSet = await waitFor('a ReplicaSet', async () => {
      const list = await apps.listNamespacedReplicaSet({ namespace });
      return list.items.find((rs) => rs.metadata?.ownerReferences?.[0]?.name === 'web');
    });
    const pod = await waitFor('a Pod', async () => {
      const list = await core.listNamespacedPod({ namespace });
      return list.items.find((p) => p.metadata?.ownerReferences?.[0]?.name === replicaSet.metadata?.name);
    });
    // No kubelet runs here, so the Pod stays Pending; it exists, which is what the injector needs.
    expect(pod.status?.phase).toBe('Pending');

    await apps.deleteNamespacedDeployment({ namespace, name: 'web' });
    await waitFor('the garbage collector to delete the ReplicaSet and the Pod', async () => {
      const [replicaSets, pods] = await Promise.all([
        apps.listNamespacedReplicaSet({ namespace }),
        core.listNamespacedPod({ namespace }),
      ]);
      return replicaSets.items.length === 0 && pods.items.length === 0;
    });
  });
});
