import type { LocalNodeCluster } from '../../../local/controlplane/node/local-node-cluster.ts';

export default async function globalTeardown(): Promise<void> {
  await (globalThis as { __nodeCluster?: LocalNodeCluster }).__nodeCluster?.stop();
}
