import type { KubernetesObject } from '@kubernetes/client-node';
import type { Condition, KeystoresSpec } from './types.ts';
import { GROUP, VERSION } from './types.ts';

/**
 * The MtlsCredentialRequest API (docs/DESIGN.md, contract "credential delivery"): the receiving namespace's half of the consent to
 * deliver an endpoint's credentials there. The CRD in crds/ is the schema; these are its TS shapes.
 */
export const REQUEST_KIND = 'MtlsCredentialRequest';
export const REQUEST_PLURAL = 'mtlscredentialrequests';
export const REQUEST_RESOURCE = { group: GROUP, version: VERSION, plural: REQUEST_PLURAL } as const;
export const REQUEST_CRD_NAME = `${REQUEST_PLURAL}.${GROUP}`;

export interface MtlsCredentialRequestSpec {
  endpoint: { namespace?: string; name: string };
  /** Absent: the CA bundle only, as a ConfigMap. */
  client?: string;
  /** Absent: the request's name. */
  targetName?: string;
  /** With `client`: keystores built for this namespace, with a password from a Secret of its own. */
  keystores?: KeystoresSpec;
}

export const DELIVERED_KINDS = ['Secret', 'ConfigMap'] as const;
export type DeliveredKind = (typeof DELIVERED_KINDS)[number];

export interface DeliveredStatus {
  kind: DeliveredKind;
  name: string;
  serialNumber?: string;
  notAfter?: string;
  caSerialNumbers: string[];
}

export interface MtlsCredentialRequestStatus {
  observedGeneration?: number;
  /** `namespace/name`, for the printer column. */
  endpoint?: string;
  conditions?: Condition[];
  delivered?: DeliveredStatus;
}

export interface MtlsCredentialRequest extends KubernetesObject {
  spec: MtlsCredentialRequestSpec;
  status?: MtlsCredentialRequestStatus;
}

/** The reasons of the Ready condition: Delivered, or which side is missing or what blocks the copy. */
export const DELIVERY_REASONS = [
  'Delivered',
  'NotAllowed',
  'EndpointNotFound',
  'ClientNotFound',
  'NotIssued',
  'TargetConflict',
  'KeystorePasswordMissing',
] as const;
export type DeliveryReason = (typeof DELIVERY_REASONS)[number];

/** On every delivered Secret and ConfigMap (with the managed-by label): the request in the same namespace. */
export const CREDENTIAL_REQUEST_LABEL = 'mtls.operator.dev/credential-request';
/** On a delivered object: the endpoint it was copied from, `namespace/name` (an annotation: `/` is no label value). */
export const SOURCE_ENDPOINT_ANNOTATION = 'mtls.operator.dev/source-endpoint';
/** In `allowedNamespaces` of spec.trustBundle only: every namespace. */
export const ANY_NAMESPACE = '*';
