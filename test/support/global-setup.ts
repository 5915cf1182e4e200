import { writeFileSync } from 'node:fs';
import { LocalControlPlane } from '../../local/controlplane/local-control-plane.ts';
import { join } from 'node:path';
import type { ControlPlaneState } from './cluster.ts';

/** One real control plane per test run, shared by every integration suite (each uses its own namespace). */
export default async function globalSetup(): Promise<void> {
  const started = Date.now();
  const plane = await LocalControlPlane.start({
    progress: (line) => process.stderr.write(`[control-plane] ${line}\n`),
  });
  process.stderr.write(`[control-plane] ready in ${Date.now() - started} ms; logs in ${plane.dir}\n`);
  (globalThis as { __controlPlane?: LocalControlPlane }).__controlPlane = plane;
  const state: ControlPlaneState = {
    kubeconfig: plane.kubeconfigPath,
    kubectl: plane.binaries.kubectl,
    dir: plane.dir,
  };
  const stateFile = join(plane.dir, 'test-state.json');
  writeFileSync(stateFile, JSON.stringify(state));
  process.env.MTLS_TEST_CONTROL_PLANE_STATE = stateFile; // test workers are started after this and inherit it
}
