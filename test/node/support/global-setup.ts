import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { locateBinaries } from '../../../local/controlplane/binaries.ts';
import { buildProductImage, ensurePauseImage, importImages } from '../../../local/controlplane/images/local-images.ts';
import { LocalNodeCluster } from '../../../local/controlplane/node/local-node-cluster.ts';
import type { NodeTestState } from './node.ts';

/** One real node per run of the real-node suite: the cluster, then the image built and loaded into it. */
export default async function globalSetup(): Promise<void> {
  const say = (line: string) => process.stderr.write(`[real node] ${line}\n`);
  const timings: Record<string, number> = {};
  let started = Date.now();
  const cluster = await LocalNodeCluster.start({ progress: say });
  timings.nodeUpMs = Date.now() - started;
  (globalThis as { __nodeCluster?: LocalNodeCluster }).__nodeCluster = cluster;

  started = Date.now();
  const image = await buildProductImage(say);
  timings.imageBuildMs = Date.now() - started;
  started = Date.now();
  await importImages(cluster.node.files.containerdSocket, [await ensurePauseImage(), image]);
  timings.imageImportMs = Date.now() - started;
  say(
    `node up in ${timings.nodeUpMs} ms, image built in ${timings.imageBuildMs} ms, imported in ${timings.imageImportMs} ms`,
  );

  const state: NodeTestState = {
    kubeconfig: cluster.kubeconfigPath,
    kubectl: cluster.plane.binaries.kubectl,
    helm: locateBinaries().helm!,
    dir: cluster.plane.dir,
    image,
    timings,
  };
  const stateFile = join(cluster.plane.dir, 'test-state.json');
  writeFileSync(stateFile, JSON.stringify(state));
  process.env.MTLS_TEST_CONTROL_PLANE_STATE = stateFile;
}
