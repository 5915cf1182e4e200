import type { KubernetesObject, V1NetworkPolicy, V1Pod, V1Secret, V1Service } from '@kubernetes/client-node';
import { ENDPOINT_LABEL, type MtlsEndpoint } from '../../../operator/api/types.ts';
import type { ClusterView, ObjectWriter } from '../../../operator/controller/endpoint-reconciler.ts';
import type { Write } from '../../../operator/controller/owned-objects.ts';

/**
 * An in-memory stand-in for the informer caches and the API server, for the reconciler's unit tier: the view
 * reads what the writer stored, the writer enforces resourceVersions the way the API server does (a replace
 * or delete made from a stale copy fails with 409), and every write is recorded in order.
 */
export interface RecordedWrite {
  verb: string;
  kind: string;
  name: string;
}

class ApiError extends Error {
  readonly code: number;
  constructor(code: number, message: string) {
    super(message);
    this.code = code;
  }
}

export class FakeCluster implements ClusterView, ObjectWriter {
  private readonly objects = new Map<string, KubernetesObject>();
  private version = 1;
  readonly writes: RecordedWrite[] = [];
  readonly events: { type: string; reason: string; message: string }[] = [];
  readonly recorder = {
    record: async (_obj: KubernetesObject, type: string, reason: string, message: string) => {
      this.events.push({ type, reason, message });
    },
  };

  readonly namespace: string;
  constructor(namespace: string) {
    this.namespace = namespace;
  }

  private key = (kind: string, name: string) => `${kind}/${name}`;

  private store<T extends KubernetesObject>(kind: string, obj: T): T {
    const stored = structuredClone(obj);
    stored.metadata = { ...stored.metadata, namespace: this.namespace, resourceVersion: String(++this.version) };
    stored.metadata.uid ??= `uid-${kind}-${stored.metadata.name}`;
    this.objects.set(this.key(kind, stored.metadata.name!), stored);
    return stored;
  }

  private get<T extends KubernetesObject>(kind: string, name: string): T | undefined {
    const found = this.objects.get(this.key(kind, name));
    return found && (structuredClone(found) as T);
  }

  private list<T extends KubernetesObject>(kind: string): T[] {
    return [...this.objects.entries()]
      .filter(([key]) => key.startsWith(`${kind}/`))
      .map(([, obj]) => structuredClone(obj) as T);
  }

  putEndpoint(ep: MtlsEndpoint): MtlsEndpoint {
    return this.store('MtlsEndpoint', { apiVersion: 'mtls.operator.dev/v1alpha1', kind: 'MtlsEndpoint', ...ep });
  }

  putSecret(secret: V1Secret): void {
    this.store('Secret', secret);
  }

  // ---- ClusterView ----
  endpoint = (_ns: string, name: string) => this.get<MtlsEndpoint>('MtlsEndpoint', name);
  secret = (_ns: string, name: string) => this.get<V1Secret>('Secret', name);
  secretsOf = (_ns: string, endpoint: string) =>
    this.list<V1Secret>('Secret').filter((s) => s.metadata?.labels?.[ENDPOINT_LABEL] === endpoint);
  servicesOf = (_ns: string, endpoint: string) =>
    this.list<V1Service>('Service').filter((s) => s.metadata?.labels?.[ENDPOINT_LABEL] === endpoint);
  networkPoliciesOf = (_ns: string, endpoint: string) =>
    this.list<V1NetworkPolicy>('NetworkPolicy').filter((s) => s.metadata?.labels?.[ENDPOINT_LABEL] === endpoint);
  pods = (): V1Pod[] => [];

  // ---- ObjectWriter ----
  async perform(_namespace: string, write: Write): Promise<void> {
    const name = write.verb === 'delete' ? write.name : write.body.metadata!.name!;
    this.writes.push({ verb: write.verb, kind: write.kind, name });
    const current = this.objects.get(this.key(write.kind, name));
    if (write.verb === 'create') {
      if (current) throw new ApiError(409, `${write.kind} ${name} already exists`);
      this.store(write.kind, write.body);
    } else if (write.verb === 'replace') {
      if (!current) throw new ApiError(404, `${write.kind} ${name} not found`);
      if (write.body.metadata?.resourceVersion !== current.metadata?.resourceVersion)
        throw new ApiError(409, `${write.kind} ${name}: the object has been modified`);
      this.store(write.kind, write.body);
    } else {
      const rv = 'resourceVersion' in write ? write.resourceVersion : undefined;
      if (current && rv && rv !== current.metadata?.resourceVersion)
        throw new ApiError(409, `${write.kind} ${name}: precondition failed`);
      this.objects.delete(this.key(write.kind, name));
    }
  }

  async patchStatus(
    _resource: unknown,
    _namespace: string,
    name: string,
    resourceVersion: string | undefined,
    status: unknown,
  ): Promise<void> {
    this.writes.push({ verb: 'patch', kind: 'MtlsEndpoint/status', name });
    const ep = this.get<MtlsEndpoint>('MtlsEndpoint', name)!;
    if (resourceVersion !== ep.metadata?.resourceVersion) throw new ApiError(409, `MtlsEndpoint ${name}: stale status`);
    const merged: Record<string, unknown> = { ...ep.status, ...(status as Record<string, unknown>) };
    for (const [k, v] of Object.entries(merged)) if (v === null) delete merged[k];
    this.store('MtlsEndpoint', { ...ep, status: merged });
  }

  /** The writes since the last call, as `verb kind/name`. */
  takeWrites(): string[] {
    return this.writes.splice(0).map((w) => `${w.verb} ${w.kind}/${w.name}`);
  }

  takeEvents(): string[] {
    return this.events.splice(0).map((e) => e.reason);
  }
}
