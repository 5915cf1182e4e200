import type { V1ConfigMap, V1OwnerReference, V1Secret } from '@kubernetes/client-node';
import {
  ANY_NAMESPACE,
  CREDENTIAL_REQUEST_LABEL,
  type DeliveredStatus,
  type DeliveryReason,
  type MtlsCredentialRequest,
  type MtlsCredentialRequestStatus,
  REQUEST_KIND,
  SOURCE_ENDPOINT_ANNOTATION,
} from '../api/credential-request.ts';
import {
  API_VERSION,
  clientSecretName,
  ENDPOINT_LABEL,
  MANAGED_BY_LABEL,
  MANAGED_BY_VALUE,
  type MtlsEndpoint,
  SECRET_KEYS,
  serverSecretName,
} from '../api/types.ts';
import { DEFAULT_PASSWORD_SECRET_KEY, DEFAULT_PKCS12_PROFILE } from '../api/defaults.ts';
import { setCondition } from '../controller/conditions.ts';
import type { KeystoreContent, Pkcs12Request } from '../controller/keystores.ts';
import { secretText } from '../kube/secret-data.ts';
import { certInfo } from '../pki/certs.ts';
import { parseCertificates } from '../pki/inspect.ts';

/**
 * Delivery of an endpoint's credentials into another namespace, decided without I/O: from a request, the
 * endpoint it names, the endpoint's Secret to copy and what this request already delivered, the writes that
 * make the copy current (or remove it) and the request's status.
 */
export interface DeliverySnapshot {
  request: MtlsCredentialRequest;
  endpoint: MtlsEndpoint | undefined;
  /** The endpoint's Secret the copy is made from: the client's, or the server's for the CA bundle. */
  source: V1Secret | undefined;
  /** The Secrets and ConfigMaps in the request's namespace labelled as delivered for this request. */
  deliveredSecrets: readonly V1Secret[];
  deliveredConfigMaps: readonly V1ConfigMap[];
  /** The target name is held by an object the operator did not create (learnt when a create answered 409). */
  targetTaken: boolean;
  /**
   * With spec.keystores.pkcs12.create: the stores built with this namespace's password (async, so built by the
   * caller: operator/controller/keystores.ts pkcs12Content), and what is wrong with the password if anything.
   */
  keystores?: { content: KeystoreContent; problem?: string };
  now: Date;
}

export type DeliveryWrite =
  | { verb: 'create'; kind: 'Secret'; body: V1Secret }
  | { verb: 'replace'; kind: 'Secret'; body: V1Secret }
  | { verb: 'create'; kind: 'ConfigMap'; body: V1ConfigMap }
  | { verb: 'replace'; kind: 'ConfigMap'; body: V1ConfigMap }
  | { verb: 'delete'; kind: 'Secret' | 'ConfigMap'; name: string; uid?: string };

export interface DeliveryDecision {
  writes: DeliveryWrite[];
  status: MtlsCredentialRequestStatus;
  /** The Ready reason, for logs and Events. */
  reason: DeliveryReason;
}

/**
 * The only keys ever copied. The CA Secret is never a source, and a source key outside this list (a future
 * one, or one added by hand) stays behind: the copy cannot carry the CA key by construction.
 */
export const CLIENT_KEYS = [
  SECRET_KEYS.tlsCert,
  SECRET_KEYS.tlsKey,
  SECRET_KEYS.caCert,
  SECRET_KEYS.keystoreP12,
  SECRET_KEYS.truststoreP12,
] as const;
const REQUIRED_CLIENT_KEYS = [SECRET_KEYS.tlsCert, SECRET_KEYS.tlsKey, SECRET_KEYS.caCert] as const;

/** The endpoint a request names; its namespace defaults to the request's. */
export function endpointRef(request: MtlsCredentialRequest): { namespace: string; name: string } {
  return {
    namespace: request.spec.endpoint.namespace ?? request.metadata!.namespace!,
    name: request.spec.endpoint.name,
  };
}

/** The endpoint's Secret a request copies from: the client's Secret, or the server's (its ca.crt) for the bundle. */
export function sourceSecretName(request: MtlsCredentialRequest): string {
  const { name } = endpointRef(request);
  return request.spec.client ? clientSecretName(name, request.spec.client) : serverSecretName(name);
}

export const targetName = (request: MtlsCredentialRequest): string =>
  request.spec.targetName ?? request.metadata!.name!;

/**
 * The endpoint's half of the consent. Its own namespace always may (it can read the Secrets already); another
 * namespace must be listed by the client (credentials) or, for the bundle, by spec.trustBundle or by any
 * client (a namespace that may hold a client's Secret holds the bundle in its ca.crt anyway).
 */
export function endpointAllows(ep: MtlsEndpoint, namespace: string, client: string | undefined): boolean {
  if (ep.metadata?.namespace === namespace) return true;
  const clients = ep.spec.clients ?? [];
  if (client) return clients.find((c) => c.name === client)?.allowedNamespaces?.includes(namespace) ?? false;
  const bundle = ep.spec.trustBundle?.allowedNamespaces ?? [];
  return (
    bundle.includes(ANY_NAMESPACE) ||
    bundle.includes(namespace) ||
    clients.some((c) => c.allowedNamespaces?.includes(namespace))
  );
}

type Blocked = { reason: Exclude<DeliveryReason, 'Delivered'>; message: string };

/** The request's own keystores, with defaults: undefined unless spec.keystores.pkcs12.create. */
export function requestedPkcs12(request: MtlsCredentialRequest): Pkcs12Request | undefined {
  const pkcs12 = request.spec.keystores?.pkcs12;
  if (!request.spec.client || !pkcs12?.create) return undefined;
  return {
    passwordSecret: pkcs12.passwordSecretRef.name,
    passwordKey: pkcs12.passwordSecretRef.key ?? DEFAULT_PASSWORD_SECRET_KEY,
    profile: pkcs12.profile ?? DEFAULT_PKCS12_PROFILE,
  };
}

/**
 * Why nothing can be delivered for the request yet (the endpoint, its consent or its Secret), or undefined: pure,
 * and cheap enough to ask before anything is built for a copy.
 */
export function deliveryBlocked(s: Pick<DeliverySnapshot, 'request' | 'endpoint' | 'source'>): Blocked | undefined {
  const { request } = s;
  const namespace = request.metadata!.namespace!;
  const ref = endpointRef(request);
  const epName = `${ref.namespace}/${ref.name}`;
  const client = request.spec.client;
  const what = client ? `client ${client}'s credentials` : 'the CA bundle';
  const ep = s.endpoint;
  if (!ep || ep.metadata?.deletionTimestamp) {
    return { reason: 'EndpointNotFound', message: `MtlsEndpoint ${epName} does not exist.` };
  }
  if (client && !(ep.spec.clients ?? []).some((c) => c.name === client)) {
    return {
      reason: 'ClientNotFound',
      message: `MtlsEndpoint ${epName} has no client ${client} in spec.clients (a removed client is revoked).`,
    };
  }
  if (!endpointAllows(ep, namespace, client)) {
    const field = client ? `spec.clients[name=${client}].allowedNamespaces` : 'spec.trustBundle.allowedNamespaces';
    return {
      reason: 'NotAllowed',
      message: `MtlsEndpoint ${epName} does not allow namespace ${namespace} to receive ${what}: its owner must add ${namespace} to ${field}.`,
    };
  }
  const source = s.source;
  const owned = source?.metadata?.labels?.[ENDPOINT_LABEL] === ref.name;
  const missing = (client ? REQUIRED_CLIENT_KEYS : [SECRET_KEYS.caCert]).filter((k) => !source?.data?.[k]);
  if (!source || !owned || missing.length > 0) {
    const why = !source ? 'is missing' : !owned ? "is not labelled as the endpoint's" : `lacks ${missing.join(', ')}`;
    return {
      reason: 'NotIssued',
      message: `MtlsEndpoint ${epName} has not issued ${what} yet (Secret ${ref.namespace}/${sourceSecretName(request)} ${why}); delivery follows as soon as it does.`,
    };
  }
  return undefined;
}

type Delivered = { kind: 'Secret'; obj: V1Secret } | { kind: 'ConfigMap'; obj: V1ConfigMap };

/** The copies made for a request, with their kinds. */
export function deliveredObjects(s: Pick<DeliverySnapshot, 'deliveredSecrets' | 'deliveredConfigMaps'>): Delivered[] {
  return [
    ...s.deliveredSecrets.map((obj) => ({ kind: 'Secret' as const, obj })),
    ...s.deliveredConfigMaps.map((obj) => ({ kind: 'ConfigMap' as const, obj })),
  ];
}

/** Deletes of copies, each bound to the uid it was decided on. */
export function withdrawals(copies: readonly Delivered[]): DeliveryWrite[] {
  return copies.map(({ kind, obj }) => ({ verb: 'delete', kind, name: obj.metadata!.name!, uid: obj.metadata?.uid }));
}

export function decideDelivery(s: DeliverySnapshot): DeliveryDecision {
  const { request } = s;
  const namespace = request.metadata!.namespace!;
  const ref = endpointRef(request);
  const epName = `${ref.namespace}/${ref.name}`;
  const client = request.spec.client;
  const target = targetName(request);
  const what = client ? `client ${client}'s credentials` : 'the CA bundle';

  const blocked = deliveryBlocked(s);

  const desired = blocked ? undefined : desiredObject(s, target);
  const existing = deliveredObjects(s);
  const writes: DeliveryWrite[] = withdrawals(
    existing.filter(({ kind, obj }) => !desired || kind !== desired.kind || obj.metadata?.name !== target),
  );

  let outcome: Blocked | undefined = blocked;
  if (!outcome && s.keystores?.problem) outcome = { reason: 'KeystorePasswordMissing', message: s.keystores.problem };
  if (desired) {
    const current = existing.find(({ kind, obj }) => kind === desired.kind && obj.metadata?.name === target)?.obj;
    if (!current && s.targetTaken) {
      outcome = {
        reason: 'TargetConflict',
        message: `A ${desired.kind} named ${target} already exists in ${namespace} and was not made by the operator: delete it, or set spec.targetName to another name.`,
      };
    } else {
      writes.push(...writesFor(desired, current));
    }
  }

  const reason = outcome?.reason ?? 'Delivered';
  // A copy without its keystores is still a copy: it is delivered, and Ready says what is missing.
  const delivered = !desired || (outcome && outcome.reason !== 'KeystorePasswordMissing') ? undefined : desired.status;
  const message =
    outcome?.message ??
    `${what} of MtlsEndpoint ${epName} delivered as ${desired!.kind} ${target}, kept current at every renewal and CA rollover.`;
  const generation = request.metadata?.generation;
  const conditions = setCondition(
    request.status?.conditions ?? [],
    { type: 'Ready', status: outcome ? 'False' : 'True', reason, message, observedGeneration: generation },
    s.now,
  );
  return { writes, reason, status: { observedGeneration: generation, endpoint: epName, conditions, delivered } };
}

type Desired =
  | { kind: 'Secret'; body: V1Secret; status: DeliveredStatus }
  | { kind: 'ConfigMap'; body: V1ConfigMap; status: DeliveredStatus };

function desiredObject(s: DeliverySnapshot, name: string): Desired {
  const { request } = s;
  const ref = endpointRef(request);
  const metadata = {
    name,
    namespace: request.metadata!.namespace!,
    labels: { [MANAGED_BY_LABEL]: MANAGED_BY_VALUE, [CREDENTIAL_REQUEST_LABEL]: request.metadata!.name! },
    annotations: { [SOURCE_ENDPOINT_ANNOTATION]: `${ref.namespace}/${ref.name}` },
    ownerReferences: [requestOwnerReference(request)],
  };
  const caPem = secretText(s.source, SECRET_KEYS.caCert)!;
  const caSerialNumbers = parseCertificates(caPem).map((c) => c.serialNumber.toLowerCase());
  if (!request.spec.client) {
    return {
      kind: 'ConfigMap',
      body: { metadata, data: { [SECRET_KEYS.caCert]: caPem } },
      status: { kind: 'ConfigMap', name, caSerialNumbers },
    };
  }
  // Keystores of the request's own (built with its password) replace the endpoint's, never mix with them.
  const own = requestedPkcs12(request) ? s.keystores?.content : undefined;
  const copied = own ? REQUIRED_CLIENT_KEYS : CLIENT_KEYS;
  const data = {
    ...Object.fromEntries(
      copied.flatMap((key) => {
        const value = s.source!.data![key];
        return value === undefined ? [] : [[key, value]];
      }),
    ),
    ...own?.data,
  };
  Object.assign(metadata.annotations, own?.annotations);
  const leaf = certInfo(secretText(s.source, SECRET_KEYS.tlsCert)!);
  return {
    kind: 'Secret',
    body: { metadata, type: 'kubernetes.io/tls', data },
    status: {
      kind: 'Secret',
      name,
      serialNumber: leaf.serialNumber,
      notAfter: leaf.notAfter.toISOString().replace(/\.\d+Z$/, 'Z'),
      caSerialNumbers,
    },
  };
}

/** Same namespace as the copy: deleting the request lets the garbage collector delete the copy too. */
export function requestOwnerReference(request: MtlsCredentialRequest): V1OwnerReference {
  return {
    apiVersion: request.apiVersion ?? API_VERSION,
    kind: request.kind ?? REQUEST_KIND,
    name: request.metadata!.name!,
    uid: request.metadata!.uid!,
    controller: true,
  };
}

function writesFor(desired: Desired, current: V1Secret | V1ConfigMap | undefined): DeliveryWrite[] {
  if (!current) {
    return desired.kind === 'Secret'
      ? [{ verb: 'create', kind: 'Secret', body: desired.body }]
      : [{ verb: 'create', kind: 'ConfigMap', body: desired.body }];
  }
  const meta = current.metadata ?? {};
  const wanted = desired.body.metadata!;
  const same =
    sameRecord(current.data ?? {}, desired.body.data ?? {}) &&
    (desired.kind === 'ConfigMap' || (current as V1Secret).type === desired.body.type) &&
    Object.entries(wanted.labels!).every(([k, v]) => meta.labels?.[k] === v) &&
    Object.entries(wanted.annotations!).every(([k, v]) => meta.annotations?.[k] === v) &&
    (meta.ownerReferences ?? []).some((ref) => ref.uid === wanted.ownerReferences![0]!.uid && ref.controller);
  if (same) return [];
  if (desired.kind === 'Secret' && (current as V1Secret).type !== desired.body.type) {
    // type is immutable: delete and create again.
    return [
      { verb: 'delete', kind: 'Secret', name: wanted.name!, uid: meta.uid },
      { verb: 'create', kind: 'Secret', body: desired.body },
    ];
  }
  const metadata = {
    ...meta,
    labels: { ...meta.labels, ...wanted.labels },
    annotations: { ...meta.annotations, ...wanted.annotations },
    ownerReferences: [...(meta.ownerReferences ?? []).filter((ref) => !ref.controller), ...wanted.ownerReferences!],
  };
  return desired.kind === 'Secret'
    ? [{ verb: 'replace', kind: 'Secret', body: { ...current, ...desired.body, metadata } }]
    : [{ verb: 'replace', kind: 'ConfigMap', body: { ...current, ...desired.body, metadata } }];
}

function sameRecord(a: Record<string, string>, b: Record<string, string>): boolean {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((k) => a[k] === b[k]);
}
