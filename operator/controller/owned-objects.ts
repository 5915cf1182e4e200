import type { V1NetworkPolicy, V1OwnerReference, V1Secret, V1Service, V1ServicePort } from '@kubernetes/client-node';
import {
  API_VERSION,
  KIND,
  managedLabels,
  type MtlsEndpoint,
  SERVICE_PORT,
  serviceName,
  testServiceName,
} from '../api/types.ts';
import { listenerPortName, testListenerPortName } from '../api/injection.ts';
import { sameNetworkPolicySpec } from './network-policy.ts';
import type { Note } from './plan.ts';
import type { ResolvedSpec } from './resolved-spec.ts';

/**
 * What to write so that the objects an endpoint owns match what it wants, decided from the cache without I/O.
 * Every write is one of these; the reconciler performs them in the order its apply rule states.
 */
export type Write =
  | { verb: 'create'; kind: 'Secret'; body: V1Secret }
  | { verb: 'replace'; kind: 'Secret'; body: V1Secret }
  | { verb: 'delete'; kind: 'Secret'; name: string; uid?: string; resourceVersion?: string }
  | { verb: 'create'; kind: 'Service'; body: V1Service }
  | { verb: 'replace'; kind: 'Service'; body: V1Service }
  | { verb: 'delete'; kind: 'Service'; name: string; uid?: string }
  | { verb: 'create'; kind: 'NetworkPolicy'; body: V1NetworkPolicy }
  | { verb: 'replace'; kind: 'NetworkPolicy'; body: V1NetworkPolicy }
  | { verb: 'delete'; kind: 'NetworkPolicy'; name: string; uid?: string };

export function endpointOwnerReference(ep: MtlsEndpoint): V1OwnerReference {
  return {
    apiVersion: ep.apiVersion ?? API_VERSION,
    kind: ep.kind ?? KIND,
    name: ep.metadata!.name!,
    uid: ep.metadata!.uid!,
    controller: true,
    blockOwnerDeletion: true,
  };
}

export interface DesiredSecret {
  name: string;
  namespace: string;
  type: string;
  /** Base64, as stored. */
  data: Record<string, string>;
  labels: Record<string, string>;
  /** The operator's own annotations (mtls.operator.dev/...); others on the object are left alone. */
  annotations: Record<string, string>;
  owner: V1OwnerReference;
}

const OWN_ANNOTATION_PREFIX = 'mtls.operator.dev/';

/**
 * The writes that make `existing` hold `desired`: none when data, type, labels, the operator's annotations and
 * owner already match. A replace carries the cached resourceVersion, so a decision made on stale data fails
 * with 409 and is retried. `type` is immutable: a Secret of the wrong type is deleted and created again.
 */
export function secretWrites(
  existing: V1Secret | undefined,
  desired: DesiredSecret,
): { writes: Write[]; notes: Note[] } {
  const create: Write = {
    verb: 'create',
    kind: 'Secret',
    body: {
      metadata: {
        name: desired.name,
        namespace: desired.namespace,
        labels: desired.labels,
        annotations: desired.annotations,
        ownerReferences: [desired.owner],
      },
      type: desired.type,
      data: desired.data,
    },
  };
  if (!existing) return { writes: [create], notes: [] };
  if (existing.type !== desired.type) {
    return {
      writes: [
        {
          verb: 'delete',
          kind: 'Secret',
          name: desired.name,
          uid: existing.metadata?.uid,
          resourceVersion: existing.metadata?.resourceVersion,
        },
        create,
      ],
      notes: [
        {
          type: 'Warning',
          reason: 'Repaired',
          message: `Secret ${desired.name} had type ${existing.type ?? '(none)'} instead of ${desired.type}; created it again`,
        },
      ],
    };
  }
  const meta = existing.metadata ?? {};
  const annotations = meta.annotations ?? {};
  const own = pick(annotations, (key) => key.startsWith(OWN_ANNOTATION_PREFIX));
  const same =
    sameRecord(existing.data ?? {}, desired.data) &&
    Object.entries(desired.labels).every(([k, v]) => meta.labels?.[k] === v) &&
    sameRecord(own, desired.annotations) &&
    (meta.ownerReferences ?? []).some((ref) => ref.uid === desired.owner.uid && ref.controller);
  if (same) return { writes: [], notes: [] };
  const body: V1Secret = {
    ...existing,
    metadata: {
      ...meta,
      labels: { ...meta.labels, ...desired.labels },
      annotations: { ...pick(annotations, (key) => !key.startsWith(OWN_ANNOTATION_PREFIX)), ...desired.annotations },
      ownerReferences: [...(meta.ownerReferences ?? []).filter((ref) => !ref.controller), desired.owner],
    },
    type: desired.type,
    data: desired.data,
  };
  return { writes: [{ verb: 'replace', kind: 'Secret', body }], notes: [] };
}

/**
 * One Service per listener (`<endpoint>-<mode>`, port 443 to the listener's named port), and with
 * spec.testListeners one `<endpoint>-bad` with a port per test listener (its own number, to its named port);
 * others the endpoint owns deleted. Without matchLabels there is no Service selector to give them: only the
 * deletions, and a reason.
 */
export function serviceWrites(
  ep: MtlsEndpoint,
  spec: Pick<ResolvedSpec, 'listeners' | 'podSelectorLabels'> & Partial<Pick<ResolvedSpec, 'testListeners'>>,
  owned: readonly V1Service[],
): { writes: Write[]; skipped?: { reason: string; message: string } } {
  const name = ep.metadata!.name!;
  const namespace = ep.metadata!.namespace!;
  const wanted = new Map<string, V1ServicePort[]>(
    spec.listeners.map((listener) => [
      serviceName(name, listener.mode),
      [{ name: 'https', port: SERVICE_PORT, targetPort: listenerPortName(listener.mode), protocol: 'TCP' }],
    ]),
  );
  if (spec.testListeners?.length) {
    wanted.set(
      testServiceName(name),
      spec.testListeners.map((l) => ({
        name: testListenerPortName(l.kind),
        port: l.port,
        targetPort: testListenerPortName(l.kind),
        protocol: 'TCP',
      })),
    );
  }
  const writes: Write[] = owned
    .filter((svc) => !wanted.has(svc.metadata!.name!))
    .map((svc) => ({ verb: 'delete', kind: 'Service', name: svc.metadata!.name!, uid: svc.metadata!.uid }));
  const selector = spec.podSelectorLabels;
  if (!selector) {
    return {
      writes,
      skipped: {
        reason: 'ServicesSkipped',
        message:
          'spec.podSelector uses matchExpressions, which a Service selector cannot express: no Services are managed; select pods with matchLabels.',
      },
    };
  }
  for (const [svcName, ports] of wanted) {
    const existing = owned.find((svc) => svc.metadata?.name === svcName);
    if (!existing) {
      writes.push({
        verb: 'create',
        kind: 'Service',
        body: {
          metadata: {
            name: svcName,
            namespace,
            labels: managedLabels(name),
            ownerReferences: [endpointOwnerReference(ep)],
          },
          spec: { selector, ports },
        },
      });
      continue;
    }
    const current = existing.spec ?? {};
    const portsOf = (list: readonly V1ServicePort[]) =>
      JSON.stringify(list.map((p) => [p.name ?? '', p.port, String(p.targetPort)]));
    const same =
      JSON.stringify(current.selector ?? {}) === JSON.stringify(selector) &&
      portsOf(current.ports ?? []) === portsOf(ports);
    if (!same)
      writes.push({ verb: 'replace', kind: 'Service', body: { ...existing, spec: { ...current, selector, ports } } });
  }
  return { writes };
}

/** Keeps the one policy wanted (or none), deleting any other the endpoint owns. */
export function networkPolicyWrites(
  ep: MtlsEndpoint,
  desired: V1NetworkPolicy | undefined,
  owned: readonly V1NetworkPolicy[],
): Write[] {
  const wantedName = desired?.metadata?.name;
  const writes: Write[] = owned
    .filter((policy) => policy.metadata?.name !== wantedName)
    .map((policy) => ({
      verb: 'delete',
      kind: 'NetworkPolicy',
      name: policy.metadata!.name!,
      uid: policy.metadata!.uid,
    }));
  if (!desired) return writes;
  const existing = owned.find((policy) => policy.metadata?.name === wantedName);
  const metadata = { ...desired.metadata, ownerReferences: [endpointOwnerReference(ep)] };
  if (!existing) {
    writes.push({ verb: 'create', kind: 'NetworkPolicy', body: { ...desired, metadata } });
  } else if (!sameNetworkPolicySpec(existing.spec, desired.spec!)) {
    writes.push({
      verb: 'replace',
      kind: 'NetworkPolicy',
      body: { ...desired, metadata: { ...existing.metadata, labels: metadata.labels } },
    });
  }
  return writes;
}

function pick(record: Record<string, string>, keep: (key: string) => boolean): Record<string, string> {
  return Object.fromEntries(Object.entries(record).filter(([key]) => keep(key)));
}

function sameRecord(a: Record<string, string>, b: Record<string, string>): boolean {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((k) => a[k] === b[k]);
}
