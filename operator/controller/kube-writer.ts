import {
  CoreV1Api,
  CustomObjectsApi,
  type KubeConfig,
  NetworkingV1Api,
  PatchStrategy,
  setHeaderOptions,
  type V1NetworkPolicy,
  type V1Secret,
  type V1Service,
} from '@kubernetes/client-node';
import { isNotFound } from '../kube/errors.ts';
import { logger } from '../log.ts';
import type { Write } from './owned-objects.ts';

/**
 * Every write the controller makes, in one place. Updates carry the resourceVersion that the decision was
 * based on, so a decision made on a stale cache fails with 409 and is retried on fresh data instead of
 * overwriting (which is what makes a renewal happen once, even with two workers or two replicas).
 */
export class KubeWriter {
  private readonly core: CoreV1Api;
  private readonly custom: CustomObjectsApi;
  private readonly networking: NetworkingV1Api;
  /** Writes made since start, for the steady-state "no writes" check and the benchmarks. */
  writes = 0;
  private readonly log = logger('kube-writer');

  private count(verb: string, kind: string, namespace: string, name: string | undefined): void {
    this.writes++;
    this.log.debug('write', { verb, kind, namespace, name });
  }

  constructor(kc: KubeConfig) {
    this.core = kc.makeApiClient(CoreV1Api);
    this.custom = kc.makeApiClient(CustomObjectsApi);
    this.networking = kc.makeApiClient(NetworkingV1Api);
  }

  /** Performs one write the reconciler decided on. */
  async perform(namespace: string, write: Write): Promise<void> {
    switch (write.kind) {
      case 'Secret':
        if (write.verb === 'create') await this.createSecret(namespace, write.body);
        else if (write.verb === 'replace') await this.replaceSecret(namespace, write.body);
        else await this.deleteSecret(namespace, write.name, write.uid, write.resourceVersion);
        return;
      case 'Service':
        if (write.verb === 'create') await this.createService(namespace, write.body);
        else if (write.verb === 'replace') await this.replaceService(namespace, write.body);
        else await this.deleteService(namespace, write.name, write.uid);
        return;
      case 'NetworkPolicy':
        if (write.verb === 'create') await this.createNetworkPolicy(namespace, write.body);
        else if (write.verb === 'replace') await this.replaceNetworkPolicy(namespace, write.body);
        else await this.deleteNetworkPolicy(namespace, write.name, write.uid);
        return;
    }
  }

  async createSecret(namespace: string, body: V1Secret): Promise<V1Secret> {
    this.count('create', 'Secret', namespace, body.metadata?.name);
    return this.core.createNamespacedSecret({ namespace, body });
  }

  /** Replaces `body` (which must carry the resourceVersion it was read at). */
  async replaceSecret(namespace: string, body: V1Secret): Promise<V1Secret> {
    this.count('replace', 'Secret', namespace, body.metadata?.name);
    return this.core.replaceNamespacedSecret({ namespace, name: body.metadata!.name!, body });
  }

  /** Deletes a Secret if it is still the version we looked at (preconditions), ignoring one already gone. */
  async deleteSecret(namespace: string, name: string, uid?: string, resourceVersion?: string): Promise<void> {
    this.count('delete', 'Secret', namespace, name);
    try {
      await this.core.deleteNamespacedSecret({
        namespace,
        name,
        body: uid || resourceVersion ? { preconditions: { uid, resourceVersion } } : undefined,
      });
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }

  async createService(namespace: string, body: V1Service): Promise<V1Service> {
    this.count('create', 'Service', namespace, body.metadata?.name);
    return this.core.createNamespacedService({ namespace, body });
  }

  async replaceService(namespace: string, body: V1Service): Promise<V1Service> {
    this.count('replace', 'Service', namespace, body.metadata?.name);
    return this.core.replaceNamespacedService({ namespace, name: body.metadata!.name!, body });
  }

  async deleteService(namespace: string, name: string, uid?: string): Promise<void> {
    this.count('delete', 'Service', namespace, name);
    try {
      await this.core.deleteNamespacedService({ namespace, name, body: uid ? { preconditions: { uid } } : undefined });
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }

  async createNetworkPolicy(namespace: string, body: V1NetworkPolicy): Promise<V1NetworkPolicy> {
    this.count('create', 'NetworkPolicy', namespace, body.metadata?.name);
    return this.networking.createNamespacedNetworkPolicy({ namespace, body });
  }

  async replaceNetworkPolicy(namespace: string, body: V1NetworkPolicy): Promise<V1NetworkPolicy> {
    this.count('replace', 'NetworkPolicy', namespace, body.metadata?.name);
    return this.networking.replaceNamespacedNetworkPolicy({ namespace, name: body.metadata!.name!, body });
  }

  async deleteNetworkPolicy(namespace: string, name: string, uid?: string): Promise<void> {
    this.count('delete', 'NetworkPolicy', namespace, name);
    try {
      await this.networking.deleteNamespacedNetworkPolicy({
        namespace,
        name,
        body: uid ? { preconditions: { uid } } : undefined,
      });
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }

  /** Merge-patches the status subresource, guarded by the resourceVersion the status was computed from. */
  async patchStatus(
    resource: { group: string; version: string; plural: string },
    namespace: string,
    name: string,
    resourceVersion: string | undefined,
    status: unknown,
  ): Promise<void> {
    this.count('patch', 'MtlsEndpoint/status', namespace, name);
    await this.custom.patchNamespacedCustomObjectStatus(
      { ...resource, namespace, name, body: { metadata: { resourceVersion }, status } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
  }
}
