import type { LocalControlPlane } from '../../local/controlplane/local-control-plane.ts';

export default async function globalTeardown(): Promise<void> {
  const plane = (globalThis as { __controlPlane?: LocalControlPlane }).__controlPlane;
  // Keep the logs of a failed CI run for whoever reads it.
  await plane?.stop({ keep: process.env.MTLS_KEEP_CONTROL_PLANE === '1' });
}
