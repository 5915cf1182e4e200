import * as k8s from '@kubernetes/client-node';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { loadKubeConfig } from '../../operator/kube/kubeconfig.ts';
import { kubeconfigPath } from '../support/cluster.ts';

/** TLS connections undici opened while `work` ran. */
async function connectionsDuring(work: () => Promise<void>): Promise<number> {
  let opened = 0;
  const onConnect = () => opened++;
  subscribe('undici:client:connected', onConnect);
  try {
    await work();
  } finally {
    unsubscribe('undici:client:connected', onConnect);
  }
  return opened;
}

describe('the operator KubeConfig', () => {
  it('sends every API request over shared keep-alive connections, not one TLS connection each', async () => {
    const calls = async (kc: k8s.KubeConfig) => {
      const core = kc.makeApiClient(k8s.CoreV1Api);
      for (let i = 0; i < 20; i++) await core.listNamespace();
      await Promise.all(Array.from({ length: 10 }, () => core.readNamespace({ name: 'default' })));
    };
    const plain = new k8s.KubeConfig();
    plain.loadFromFile(kubeconfigPath());
    // What client-node 2.0 does by itself (a new agent per request): the reason for SharedConnectionsKubeConfig.
    expect(await connectionsDuring(() => calls(plain))).toBe(30);
    expect(await connectionsDuring(() => calls(loadKubeConfig(kubeconfigPath())))).toBeLessThanOrEqual(10);
  });
});
