import type { KubernetesObject, V1LabelSelector } from '@kubernetes/client-node';

/** The MtlsEndpoint API (docs/DESIGN.md contract 1). The CRD in crds/ is the schema; these are its TS shapes. */
export const GROUP = 'mtls.operator.dev';
export const VERSION = 'v1alpha1';
export const KIND = 'MtlsEndpoint';
export const LIST_KIND = 'MtlsEndpointList';
export const PLURAL = 'mtlsendpoints';
export const SINGULAR = 'mtlsendpoint';
export const SHORT_NAMES = ['mtls', 'mtlsep'] as const;
export const API_VERSION = `${GROUP}/${VERSION}`;
export const CRD_NAME = `${PLURAL}.${GROUP}`;
export const ENDPOINT_RESOURCE = { group: GROUP, version: VERSION, plural: PLURAL } as const;

export const MODES = ['standard', 'flexible', 'strict'] as const;
export type Mode = (typeof MODES)[number];

export const KEY_ALGORITHMS = ['ECDSA-P256', 'ECDSA-P384', 'RSA-2048', 'RSA-3072', 'RSA-4096'] as const;
export type KeyAlgorithm = (typeof KEY_ALGORITHMS)[number];

/**
 * PKCS#12 keystore profiles (cert-manager's names): Modern2023 (PBES2, AES-256-CBC, PBKDF2-HMAC-SHA-256, SHA-256
 * MAC) and LegacyDES (3DES, SHA-1 MAC) for Java before 8u301/11.0.12. operator/pki/pkcs12.ts builds them.
 */
export const PKCS12_PROFILES = ['Modern2023', 'LegacyDES'] as const;
export type Pkcs12Profile = (typeof PKCS12_PROFILES)[number];
/** Listener and upstream protocols: defined with the sidecar's flags, which carry them. */
export {
  LISTENER_PROTOCOLS,
  type ListenerProtocol,
  UPSTREAM_PROTOCOLS,
  type UpstreamProtocol,
} from '../../sidecar/flags.ts';
import type { ListenerProtocol, StreamProtocol, UpstreamProtocol } from '../../sidecar/flags.ts';
/** The bad listeners' kinds (spec.testListeners[].kind): defined with the sidecar's flags, which carry them. */
export { TEST_LISTENER_KINDS, type TestListenerKind, type TestListener } from '../../sidecar/flags.ts';
import type { TestListener } from '../../sidecar/flags.ts';

export interface Listener {
  mode: Mode;
  port: number;
  /** Absent: http. */
  protocol?: ListenerProtocol;
}

export interface CertificatesSpec {
  /** Leaf lifetime, a Go duration. */
  validity?: string;
  /** Renew this long before expiry; empty: one third of the lifetime. */
  renewBefore?: string;
  /** CA lifetime, a Go duration. */
  caValidity?: string;
  keyAlgorithm?: KeyAlgorithm;
}

export interface ClientSpec {
  name: string;
  /** Keystores written into the client's Secret beside tls.crt/tls.key/ca.crt, rebuilt with them. */
  keystores?: KeystoresSpec;
  /** Namespaces that may receive this client's credentials through an MtlsCredentialRequest (./credential-request.ts). */
  allowedNamespaces?: string[];
}

export interface KeystoresSpec {
  pkcs12?: Pkcs12KeystoreSpec;
}

/** keystore.p12 and truststore.p12 (cert-manager's spec.keystores.pkcs12, same field names). */
export interface Pkcs12KeystoreSpec {
  /** false: no PKCS#12 files (and any written before are removed). */
  create: boolean;
  /** A Secret in the endpoint's namespace holding the password that protects both files. */
  passwordSecretRef: SecretKeySelector;
  /** Absent: Modern2023. */
  profile?: Pkcs12Profile;
}

export interface SecretKeySelector {
  name: string;
  /** Absent: `password`. */
  key?: string;
}

export interface MtlsEndpointSpec {
  /** Absent: no pod is injected (the endpoint still keeps its credentials). */
  podSelector?: V1LabelSelector;
  upstreamPort: number;
  /** Absent: http1. */
  upstreamProtocol?: UpstreamProtocol;
  /** tcp listeners: send a PROXY v2 header upstream. Absent: false. */
  proxyProtocol?: boolean;
  listeners?: Listener[];
  dnsNames?: string[];
  certificates?: CertificatesSpec;
  clients?: ClientSpec[];
  /** Absent or empty: any client of this endpoint. */
  allowedClients?: string[];
  /** Absent: Enforce. */
  networkPolicy?: NetworkPolicyMode;
  /** Listeners that misbehave on purpose, for client teams to test their clients against. Absent: none. */
  testListeners?: TestListener[];
  /** Who may receive the CA bundle through an MtlsCredentialRequest (./credential-request.ts). */
  trustBundle?: TrustBundleSpec;
}

export interface TrustBundleSpec {
  /** Namespace names, or `*` alone for every namespace (a CA certificate is public). */
  allowedNamespaces?: string[];
}

/** Enforce: the operator keeps a NetworkPolicy admitting only the sidecar's ports; None: it keeps none. */
export const NETWORK_POLICY_MODES = ['Enforce', 'None'] as const;
export type NetworkPolicyMode = (typeof NETWORK_POLICY_MODES)[number];

/** metav1.Condition */
export interface Condition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  lastTransitionTime: string;
  observedGeneration?: number;
}

export const CONDITION_TYPES = ['Ready', 'Issued', 'CARollover', 'Degraded', 'RenewBeforeTooShort'] as const;
export type ConditionType = (typeof CONDITION_TYPES)[number];

export interface CertificateStatus {
  secretName?: string;
  serialNumber: string;
  notBefore?: string;
  notAfter: string;
  renewalTime: string;
}

export interface ClientCertificateStatus extends CertificateStatus {
  name: string;
}

/** Propagating: the next CA is in every trust bundle, nothing is signed by it yet. Retiring: leaves are signed
 * by the new CA; the old one stays trusted until the new leaves have propagated. */
export const CA_ROLLOVER_PHASES = ['Propagating', 'Retiring'] as const;
export type CaRolloverPhase = (typeof CA_ROLLOVER_PHASES)[number];

export interface CaRolloverStatus {
  phase: CaRolloverPhase;
  /** Serial of the CA taking over. */
  newCASerialNumber?: string;
  /** When the rollover (or its current phase) started, RFC 3339. */
  startedAt?: string;
}

export interface MtlsEndpointStatus {
  observedGeneration?: number;
  conditions?: Condition[];
  ca?: CertificateStatus;
  caRollover?: CaRolloverStatus;
  server?: CertificateStatus;
  clients?: ClientCertificateStatus[];
  revokedSerials?: string[];
  /** The listeners as `mode:port`, comma-separated, for the Modes printer column: see `modesSummary`. */
  modes?: string;
  injectedPods?: number;
  /** The name of the NetworkPolicy the operator keeps for the endpoint, or `None`. */
  networkPolicy?: string;
  /** spec.upstreamProtocol `auto` only: what a ready pod's sidecar found (its admin port's /status). */
  upstreamProtocol?: UpstreamProtocolStatus;
}

export interface UpstreamProtocolStatus {
  requested: 'auto';
  detected: StreamProtocol | 'unknown';
  reason?: string;
  pod?: string;
  probedAt?: string;
}

/** `status.modes`: a printer column shows only the first value of a list, so the operator joins them. */
export const modesSummary = (listeners: readonly Listener[]): string =>
  listeners.map((l) => `${l.mode}:${l.port}`).join(',');

export interface MtlsEndpoint extends KubernetesObject {
  spec: MtlsEndpointSpec;
  status?: MtlsEndpointStatus;
}

// Labels and annotations of contracts 2 and 3.
export const MANAGED_BY_LABEL = 'app.kubernetes.io/managed-by';
export const MANAGED_BY_VALUE = 'mtls-operator';
export const ENDPOINT_LABEL = 'mtls.operator.dev/endpoint';
/** On the Secrets: which certificate it holds (`ca`, `server`, `client`), and for a client, whose. */
export const CERTIFICATE_LABEL = 'mtls.operator.dev/certificate';
export const CLIENT_LABEL = 'mtls.operator.dev/client';
/** On a leaf Secret: a digest of what the leaf was issued for; a spec asking for something else re-issues it. */
export const ISSUANCE_HASH_ANNOTATION = 'mtls.operator.dev/issuance-hash';
/** On a client Secret: the still-valid certificates it held before, which a revocation must also cover. */
export const PREVIOUS_SERIALS_ANNOTATION = 'mtls.operator.dev/previous-serials';
/** On a namespace, value `enabled`: the webhook considers its pods. */
export const INJECTION_NAMESPACE_LABEL = 'mtls.operator.dev/injection';
export const INJECTION_ENABLED = 'enabled';
/** On a pod, value `"false"`: opt out of injection. */
export const INJECT_ANNOTATION = 'mtls.operator.dev/inject';
// The sidecar's container, volume and port names (the rest of contract 3) are in ./injection.ts.
/**
 * On an MtlsEndpoint: renewals asked for through the API (`kubectl mtls renew`), as comma-separated
 * `TARGET=TIME` entries, TARGET `server`, `client/NAME` or `all`, TIME RFC 3339. The controller re-issues each
 * certificate a target names whose issue time is before that TIME, once TIME has come (operator/controller/
 * renew-request.ts). One entry per target, so requests for different certificates never overwrite each other.
 */
export const RENEW_REQUESTED_ANNOTATION = 'mtls.operator.dev/renew-requested';
/** Port of each managed Service (`<endpoint>-<mode>`), forwarding to that listener. */
export const SERVICE_PORT = 443;

/** The labels every object the operator manages for an endpoint carries. */
export const managedLabels = (endpoint: string): Record<string, string> => ({
  [MANAGED_BY_LABEL]: MANAGED_BY_VALUE,
  [ENDPOINT_LABEL]: endpoint,
});

// Secret keys of contract 2.
export const SECRET_KEYS = {
  caCert: 'ca.crt',
  caKey: 'ca.key',
  tlsCert: 'tls.crt',
  tlsKey: 'tls.key',
  crl: 'ca.crl',
  /** Client Secrets with spec.clients[].keystores.pkcs12.create: the key and certificate chain, and the CAs. */
  keystoreP12: 'keystore.p12',
  truststoreP12: 'truststore.p12',
} as const;

type EndpointRef = string | { metadata?: { name?: string } };
const nameOf = (ep: EndpointRef): string => {
  const name = typeof ep === 'string' ? ep : ep.metadata?.name;
  if (!name) throw new Error('the MtlsEndpoint has no name');
  return name;
};

export const caSecretName = (ep: EndpointRef) => `${nameOf(ep)}-ca`;
export const serverSecretName = (ep: EndpointRef) => `${nameOf(ep)}-server`;
export const clientSecretName = (ep: EndpointRef, client: string) => `${nameOf(ep)}-client-${client}`;
export const serviceName = (ep: EndpointRef, mode: Mode) => `${nameOf(ep)}-${mode}`;
export const networkPolicyName = (ep: EndpointRef) => `${nameOf(ep)}-mtls-only`;
/** The bad certificates of spec.testListeners (never a trusted credential). */
export const testServersSecretName = (ep: EndpointRef) => `${nameOf(ep)}-test-servers`;
/** The Service of spec.testListeners, one port per test listener (its port). `-bad` fits the 54-character names. */
export const testServiceName = (ep: EndpointRef) => `${nameOf(ep)}-bad`;
/** ConfigMap in the endpoint's namespace with its CA bundle (`ca.crt`), for clients that only verify the server. */
export const caBundleConfigMapName = (ep: EndpointRef) => `${nameOf(ep)}-ca-bundle`;

/** The DNS names of the Services the operator manages for an endpoint (always in the server certificate). */
export function serviceDnsNames(ep: EndpointRef, namespace: string, modes: readonly Mode[]): string[] {
  return modes.flatMap((mode) => {
    const svc = serviceName(ep, mode);
    return [svc, `${svc}.${namespace}`, `${svc}.${namespace}.svc`, `${svc}.${namespace}.svc.cluster.local`];
  });
}

/** The DNS names of the test listeners' Service (in the server certificate while spec.testListeners is set). */
export function testServiceDnsNames(ep: EndpointRef, namespace: string): string[] {
  const svc = testServiceName(ep);
  return [svc, `${svc}.${namespace}`, `${svc}.${namespace}.svc`, `${svc}.${namespace}.svc.cluster.local`];
}

/**
 * The longest endpoint name: `<endpoint>-<mode>` must be a DNS-1035 label (63 characters) for the Services,
 * and `-flexible`/`-standard` add 9.
 */
export const MAX_ENDPOINT_NAME_LENGTH = 54;
/** Client names are DNS labels; the name is the certificate's CN (at most 64 characters in X.509). */
export const MAX_CLIENT_NAME_LENGTH = 63;
export const MAX_LISTENERS = 3;
export const MAX_CLIENTS = 100;
export const MAX_DNS_NAMES = 100;
export const MAX_TEST_LISTENERS = 6;
