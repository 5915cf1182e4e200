import type {
  ClientSpec,
  KeyAlgorithm,
  Listener,
  MtlsEndpointSpec,
  NetworkPolicyMode,
  Pkcs12Profile,
  UpstreamProtocol,
} from './types.ts';

/**
 * Every default of the MtlsEndpoint API, once. The CRD's `default:` values are checked against these by
 * test/crd/schema.unit.test.ts, so the schema and the controller cannot drift apart. The controller applies them
 * itself too (`applyDefaults`): objects stored before the CRD defaulted a field lack it.
 */
export const DEFAULT_LISTENERS: readonly Readonly<Listener>[] = [{ mode: 'strict', port: 8443 }];
/** Leaf (server and client) lifetime: one year. */
export const DEFAULT_VALIDITY = '8760h';
/** CA lifetime: five years. */
export const DEFAULT_CA_VALIDITY = '43800h';
export const DEFAULT_KEY_ALGORITHM: KeyAlgorithm = 'ECDSA-P256';
/** Empty: renew when one third of the lifetime is left (cert-manager's rule), see `renewBeforeMs`. */
export const DEFAULT_RENEW_BEFORE = '';
export const DEFAULT_RENEW_BEFORE_FRACTION = 1 / 3;
/**
 * The shortest renewBefore (effective: set, or a third of validity) that leaves kubelet time to deliver a
 * renewed certificate. kubelet writes a changed Secret into a pod's volume only at its next sync of that pod,
 * up to `syncFrequency` (1m by default) later, plus up to its Secret cache's TTL: 60-90 s with default
 * settings. A shorter renewBefore lets the sidecar serve, and clients hold, a certificate that expires
 * before its successor reaches them. Below it the endpoint stays Ready (the API admits such values, and a
 * test cluster may want them) but reports the condition `RenewBeforeTooShort` and a Warning Event.
 */
export const RENEW_BEFORE_FLOOR = '90s';
/** Secure by default: nothing on the pod network reaches the mock around its sidecar. */
export const DEFAULT_NETWORK_POLICY: NetworkPolicyMode = 'Enforce';
/** HTTP/2 clients' streams go to the upstream as HTTP/1.1: every mock speaks it. */
export const DEFAULT_UPSTREAM_PROTOCOL: UpstreamProtocol = 'http1';
/** Trust domain of the clients' SPIFFE IDs. */
export const DEFAULT_TRUST_DOMAIN = 'cluster.local';
/** PKCS#12 keystores: modern algorithms unless a client asks for the legacy profile (operator/pki/pkcs12.ts). */
export const DEFAULT_PKCS12_PROFILE: Pkcs12Profile = 'Modern2023';
/** The key of a keystore password Secret when passwordSecretRef names none. */
export const DEFAULT_PASSWORD_SECRET_KEY = 'password';
/** The shortest leaf validity the CRD admits (anything shorter would have the controller issue non-stop). */
export const MIN_VALIDITY = '10s';

export type DefaultedSpec = MtlsEndpointSpec & {
  listeners: Listener[];
  dnsNames: string[];
  clients: ClientSpec[];
  certificates: { validity: string; renewBefore: string; caValidity: string; keyAlgorithm: KeyAlgorithm };
  networkPolicy: NetworkPolicyMode;
  upstreamProtocol: UpstreamProtocol;
  proxyProtocol: boolean;
};

/** A copy of `spec` with every default filled in; fields that are set are kept as they are. */
export function applyDefaults(spec: MtlsEndpointSpec): DefaultedSpec {
  return {
    ...spec,
    listeners: spec.listeners?.length
      ? spec.listeners.map((l) => ({ ...l }))
      : DEFAULT_LISTENERS.map((l) => ({ ...l })),
    dnsNames: [...(spec.dnsNames ?? [])],
    clients: (spec.clients ?? []).map(defaultClient),
    certificates: {
      validity: spec.certificates?.validity || DEFAULT_VALIDITY,
      renewBefore: spec.certificates?.renewBefore ?? DEFAULT_RENEW_BEFORE,
      caValidity: spec.certificates?.caValidity || DEFAULT_CA_VALIDITY,
      keyAlgorithm: spec.certificates?.keyAlgorithm || DEFAULT_KEY_ALGORITHM,
    },
    networkPolicy: spec.networkPolicy ?? DEFAULT_NETWORK_POLICY,
    upstreamProtocol: spec.upstreamProtocol ?? DEFAULT_UPSTREAM_PROTOCOL,
    proxyProtocol: spec.proxyProtocol ?? false,
  };
}

function defaultClient(client: ClientSpec): ClientSpec {
  const pkcs12 = client.keystores?.pkcs12;
  if (!pkcs12) return { ...client };
  return {
    ...client,
    keystores: {
      ...client.keystores,
      pkcs12: {
        ...pkcs12,
        passwordSecretRef: {
          ...pkcs12.passwordSecretRef,
          key: pkcs12.passwordSecretRef.key ?? DEFAULT_PASSWORD_SECRET_KEY,
        },
        profile: pkcs12.profile ?? DEFAULT_PKCS12_PROFILE,
      },
    },
  };
}

/**
 * How long before expiry a certificate with this lifetime is renewed: `renewBeforeMs` when it is set and
 * shorter than the lifetime, otherwise one third of the lifetime. (A leaf clamped to its CA's expiry can be
 * shorter-lived than spec.certificates.validity; cert-manager falls back to one third then as well.)
 */
export function renewBeforeMs(lifetimeMs: number, renewBefore?: number): number {
  if (renewBefore !== undefined && renewBefore > 0 && renewBefore < lifetimeMs) return renewBefore;
  return lifetimeMs * DEFAULT_RENEW_BEFORE_FRACTION;
}
