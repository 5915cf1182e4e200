import { CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import { ENDPOINT_RESOURCE, type MtlsEndpoint } from '../api/types.ts';
import { isNotFound } from '../kube/errors.ts';

/** Reads one MtlsEndpoint; a missing one is an error that says how to list them. */
export async function readEndpoint(kc: KubeConfig, namespace: string, name: string): Promise<MtlsEndpoint> {
  try {
    return (await kc
      .makeApiClient(CustomObjectsApi)
      .getNamespacedCustomObject({ ...ENDPOINT_RESOURCE, namespace, name })) as MtlsEndpoint;
  } catch (err) {
    if (isNotFound(err)) {
      throw new Error(
        `MtlsEndpoint ${namespace}/${name} not found (kubectl get mtls -n ${namespace} lists them; -n picks the namespace)`,
      );
    }
    throw err;
  }
}
