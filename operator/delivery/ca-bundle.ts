import type { V1ConfigMap, V1Secret } from '@kubernetes/client-node';
import { caBundleConfigMapName, managedLabels, type MtlsEndpoint, SECRET_KEYS } from '../api/types.ts';
import { endpointOwnerReference } from '../controller/owned-objects.ts';
import { secretText } from '../kube/secret-data.ts';
import type { DeliveryWrite } from './decide.ts';

/**
 * The endpoint's own `<endpoint>-ca-bundle` ConfigMap (`ca.crt`: every CA its sidecar trusts, from the server
 * Secret), decided without I/O. Pods of the endpoint's namespace that only verify the server mount it instead of
 * a Secret that holds a key. Owned by the endpoint; absent while there is no server Secret yet.
 */
export function caBundleWrites(
  ep: MtlsEndpoint,
  server: V1Secret | undefined,
  existing: V1ConfigMap | undefined,
): DeliveryWrite[] {
  const name = caBundleConfigMapName(ep);
  const bundle = secretText(server, SECRET_KEYS.caCert);
  if (!bundle) return [];
  const labels = managedLabels(ep.metadata!.name!);
  const owner = endpointOwnerReference(ep);
  const data = { [SECRET_KEYS.caCert]: bundle };
  if (!existing) {
    return [
      {
        verb: 'create',
        kind: 'ConfigMap',
        body: { metadata: { name, namespace: ep.metadata!.namespace!, labels, ownerReferences: [owner] }, data },
      },
    ];
  }
  const meta = existing.metadata ?? {};
  const current =
    existing.data?.[SECRET_KEYS.caCert] === bundle &&
    Object.keys(existing.data ?? {}).length === 1 &&
    Object.entries(labels).every(([k, v]) => meta.labels?.[k] === v) &&
    (meta.ownerReferences ?? []).some((ref) => ref.uid === owner.uid && ref.controller);
  if (current) return [];
  const ownerReferences = [...(meta.ownerReferences ?? []).filter((ref) => !ref.controller), owner];
  return [
    {
      verb: 'replace',
      kind: 'ConfigMap',
      body: { ...existing, metadata: { ...meta, labels: { ...meta.labels, ...labels }, ownerReferences }, data },
    },
  ];
}
