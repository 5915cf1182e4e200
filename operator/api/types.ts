import type { KubernetesObject, V1LabelSelector } from '@kubernetes/client-node';

/** The MtlsEndpoint API (DESIGN.md contract 1). The CRD in crds/ is the schema; these are its TS shapes. */
export const GROUP = 'mtls.operator.dev';
export const VERSION = 'v1alpha1';
export const KIND = 'MtlsEndpoint';
export const PLURAL = 'mtlsendpoints';
export const API_VERSION = `${GROUP}/${VERSION}`;
export const ENDPOINT_RESOURCE = { group: GROUP, version: VERSION, plural: PLURAL } as const;

export const MODES = ['standard', 'flexible', 'strict'] as const;
export type Mode = (typeof MODES)[number];

export interface Listener {
  mode: Mode;
  port: number;
}

export interface MtlsEndpointSpec {
  podSelector?: V1LabelSelector;
  upstreamPort: number;
  listeners?: Listener[];
  dnsNames?: string[];
  certificates?: {
    validity?: string;
    renewBefore?: string;
    caValidity?: string;
    keyAlgorithm?: string;
  };
  clients?: { name: string }[];
  allowedClients?: string[];
}

export interface CertificateStatus {
  secretName?: string;
  serialNumber: string;
  notBefore?: string;
  notAfter: string;
  renewalTime: string;
}

export interface MtlsEndpointStatus {
  observedGeneration?: number;
  conditions?: {
    type: string;
    status: string;
    reason: string;
    message: string;
    lastTransitionTime: string;
    observedGeneration?: number;
  }[];
  ca?: CertificateStatus;
  server?: CertificateStatus;
  clients?: (CertificateStatus & { name: string })[];
  revokedSerials?: string[];
  injectedPods?: number;
}

export interface MtlsEndpoint extends KubernetesObject {
  spec: MtlsEndpointSpec;
  status?: MtlsEndpointStatus;
}

// Labels and names of contract 2 and 3.
export const MANAGED_BY_LABEL = 'app.kubernetes.io/managed-by';
export const MANAGED_BY_VALUE = 'mtls-operator';
export const ENDPOINT_LABEL = 'mtls.operator.dev/endpoint';
export const INJECTION_NAMESPACE_LABEL = 'mtls.operator.dev/injection';
export const INJECT_ANNOTATION = 'mtls.operator.dev/inject';

export const caSecretName = (endpoint: string) => `${endpoint}-ca`;
export const serverSecretName = (endpoint: string) => `${endpoint}-server`;
export const clientSecretName = (endpoint: string, client: string) => `${endpoint}-client-${client}`;
export const serviceName = (endpoint: string, mode: Mode) => `${endpoint}-${mode}`;
