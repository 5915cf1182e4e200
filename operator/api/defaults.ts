import type { Listener, MtlsEndpointSpec } from './types.ts';

/** Every default of the MtlsEndpoint API, once. The CRD's `default:` values are checked against these. */
export const DEFAULT_LISTENERS: readonly Listener[] = [{ mode: 'strict', port: 8443 }];
export const DEFAULT_VALIDITY = '8760h';
export const DEFAULT_CA_VALIDITY = '43800h';
export const DEFAULT_KEY_ALGORITHM = 'ECDSA-P256';
export const DEFAULT_TRUST_DOMAIN = 'cluster.local';

export type DefaultedSpec = MtlsEndpointSpec & {
  listeners: Listener[];
  certificates: { validity: string; renewBefore: string; caValidity: string; keyAlgorithm: string };
};

/** Applies the defaults to a spec (objects stored before the CRD defaulted a field lack it). */
export function applyDefaults(spec: MtlsEndpointSpec): DefaultedSpec {
  return {
    ...spec,
    listeners: spec.listeners?.length ? spec.listeners : DEFAULT_LISTENERS.map((l) => ({ ...l })),
    certificates: {
      validity: spec.certificates?.validity || DEFAULT_VALIDITY,
      renewBefore: spec.certificates?.renewBefore ?? '',
      caValidity: spec.certificates?.caValidity || DEFAULT_CA_VALIDITY,
      keyAlgorithm: spec.certificates?.keyAlgorithm || DEFAULT_KEY_ALGORITHM,
    },
  };
}
