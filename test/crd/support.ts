import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { load } from 'js-yaml';
import { kubectl, waitFor } from '../support/cluster.ts';

export const CRD_PATH = fileURLToPath(new URL('../../crds/mtls.operator.dev_mtlsendpoints.yaml', import.meta.url));
export const EXAMPLE_PATH = fileURLToPath(new URL('../../examples/mtlsendpoint.yaml', import.meta.url));

/** The CRD file as an object, for the unit tests that read its schema. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function loadCrd(): any {
  return load(readFileSync(CRD_PATH, 'utf8'));
}

/** Installs the CRD from crds/ (the same file the chart ships) and waits until the API server serves it. */
export async function installCrd(): Promise<void> {
  await kubectl(['apply', '--server-side', '--force-conflicts', '-f', CRD_PATH]); // as test/support/endpoints.ts does
  await kubectl(['wait', '--for=condition=Established', '--timeout=60s', 'crd/mtlsendpoints.mtls.operator.dev']);
  // Established can come a moment before the resource is served everywhere (discovery, watch cache).
  await waitFor('the MtlsEndpoint resource to be served', () =>
    kubectl(['get', 'mtlsendpoints', '-A']).then(() => true),
  );
}
