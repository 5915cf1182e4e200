import { isDeepStrictEqual } from 'node:util';
import {
  CoreV1Api,
  CustomObjectsApi,
  type KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  type V1ConfigMap,
  type V1Secret,
} from '@kubernetes/client-node';
import {
  CREDENTIAL_REQUEST_LABEL,
  type MtlsCredentialRequest,
  REQUEST_KIND,
  REQUEST_RESOURCE,
} from '../api/credential-request.ts';
import {
  caBundleConfigMapName,
  ENDPOINT_LABEL,
  ENDPOINT_RESOURCE,
  MANAGED_BY_LABEL,
  MANAGED_BY_VALUE,
  type MtlsEndpoint,
  SECRET_KEYS,
  serverSecretName,
} from '../api/types.ts';
import { KEYSTORE_PASSWORD_RETRY_MS, keystorePassword, pkcs12Content } from '../controller/keystores.ts';
import { secretText } from '../kube/secret-data.ts';
import { caBundleWrites } from './ca-bundle.ts';
import { runWorkers, type ReconcileResult } from '../controller/run-workers.ts';
import { WorkQueue } from '../controller/workqueue.ts';
import { isConflict, isNotFound } from '../kube/errors.ts';
import { EventRecorder } from '../kube/events.ts';
import { customObjectList, ResilientInformer } from '../kube/informer.ts';
import { logger } from '../log.ts';
import type { OperatorMetrics } from '../metrics.ts';
import {
  decideDelivery,
  deliveredObjects,
  deliveryBlocked,
  type DeliveryDecision,
  type DeliverySnapshot,
  type DeliveryWrite,
  endpointRef,
  withdrawals,
  requestedPkcs12,
  sourceSecretName,
  targetName,
} from './decide.ts';

export interface DeliveryControllerOptions {
  kubeConfig: KubeConfig;
  metrics: OperatorMetrics;
  workers?: number;
  resyncMs?: number;
  now?: () => Date;
  /** Watch one namespace only (a namespace-scoped install: then only requests in it can be served). */
  namespace?: string;
  /**
   * The endpoint controller's caches of the endpoints and the managed Secrets (the same watches): read here,
   * started and stopped by their owner, so the operator keeps one copy of every Secret rather than two.
   */
  shared?: { endpoints: ResilientInformer<MtlsEndpoint>; secrets: ResilientInformer<V1Secret> };
}

const MANAGED = `${MANAGED_BY_LABEL}=${MANAGED_BY_VALUE}`;

/**
 * A copy made for request `name`: its label and a controller reference to a request of that name (an earlier
 * one of the same name included: its copy is taken over). The label alone is not enough: another controller
 * (the endpoint's, for a Secret whose name it also wants) may have taken the object over, keeping the label;
 * such an object is neither deleted nor rewritten here.
 */
function isCopyOf(obj: V1Secret | V1ConfigMap, name: string): boolean {
  return (
    obj.metadata?.labels?.[CREDENTIAL_REQUEST_LABEL] === name &&
    (obj.metadata.ownerReferences ?? []).some((ref) => ref.controller && ref.kind === REQUEST_KIND && ref.name === name)
  );
}
/** Queue keys of the endpoints' own CA-bundle ConfigMaps; request keys are `namespace/name`. */
const BUNDLE_KEY_PREFIX = 'ca-bundle:';

/**
 * Keeps the copies MtlsCredentialRequests ask for (operator/delivery/decide.ts decides; this reads the caches
 * and writes), and each endpoint's own `<endpoint>-ca-bundle` ConfigMap (./ca-bundle.ts). Keys are
 * `namespace/name` of a request, or `ca-bundle:namespace/name` of an endpoint. An endpoint, or one of its Secrets, changing re-enqueues
 * every request that names it, so a renewal or CA rollover reaches the copies within seconds.
 */
export class DeliveryController {
  readonly queue: WorkQueue;
  private readonly log = logger('delivery');
  private readonly requests: ResilientInformer<MtlsCredentialRequest>;
  private readonly endpoints: ResilientInformer<MtlsEndpoint>;
  private readonly secrets: ResilientInformer<V1Secret>;
  private readonly configMaps: ResilientInformer<V1ConfigMap>;
  private readonly core: CoreV1Api;
  private readonly events: EventRecorder;
  private readonly custom: CustomObjectsApi;
  private readonly now: () => Date;
  private resyncTimer: NodeJS.Timeout | undefined;
  private workersDone: Promise<unknown> | undefined;
  /** Writes made since start (tests check that a steady state writes nothing). */
  writes = 0;

  private readonly options: DeliveryControllerOptions;

  constructor(options: DeliveryControllerOptions) {
    this.options = options;
    const kc = options.kubeConfig;
    this.now = options.now ?? (() => new Date());
    this.queue = new WorkQueue({ metrics: options.metrics.workQueueMetrics('mtlscredentialrequest') });
    this.core = kc.makeApiClient(CoreV1Api);
    this.events = new EventRecorder(kc, 'mtls-operator');
    this.custom = kc.makeApiClient(CustomObjectsApi);
    const ns = options.namespace;
    const scope = ns ? `/namespaces/${ns}` : '';
    const customInformer = <T extends MtlsEndpoint | MtlsCredentialRequest>(resource: {
      group: string;
      version: string;
      plural: string;
    }) =>
      new ResilientInformer<T>(
        kc,
        `/apis/${resource.group}/${resource.version}${scope}/${resource.plural}`,
        () =>
          customObjectList<T>(
            ns
              ? this.custom.listNamespacedCustomObject({ ...resource, namespace: ns })
              : this.custom.listClusterCustomObject(resource),
          ),
        { name: `delivery-${resource.plural}` },
      );
    this.requests = customInformer<MtlsCredentialRequest>(REQUEST_RESOURCE);
    this.endpoints = options.shared?.endpoints ?? customInformer<MtlsEndpoint>(ENDPOINT_RESOURCE);
    this.secrets =
      options.shared?.secrets ??
      new ResilientInformer<V1Secret>(
        kc,
        `/api/v1${scope}/secrets`,
        () =>
          ns
            ? this.core.listNamespacedSecret({ namespace: ns, labelSelector: MANAGED })
            : this.core.listSecretForAllNamespaces({ labelSelector: MANAGED }),
        { labelSelector: MANAGED, name: 'delivery-secrets' },
      );
    this.configMaps = new ResilientInformer<V1ConfigMap>(
      kc,
      `/api/v1${scope}/configmaps`,
      () =>
        ns
          ? this.core.listNamespacedConfigMap({ namespace: ns, labelSelector: MANAGED })
          : this.core.listConfigMapForAllNamespaces({ labelSelector: MANAGED }),
      { labelSelector: MANAGED, name: 'delivery-configmaps' },
    );

    const enqueue = (obj: MtlsCredentialRequest) => this.queue.add(`${obj.metadata!.namespace}/${obj.metadata!.name}`);
    this.requests.on('add', enqueue);
    this.requests.on('delete', enqueue);
    // Status writes do not change the generation; the request's own status is not an input.
    this.requests.on('update', (obj) => {
      if (obj.status?.observedGeneration !== obj.metadata?.generation) enqueue(obj);
    });
    const enqueueNaming = (namespace: string | undefined, endpoint: string | undefined) => {
      if (!namespace || !endpoint) return;
      this.queue.add(`${BUNDLE_KEY_PREFIX}${namespace}/${endpoint}`);
      for (const request of this.requests.list()) {
        const ref = endpointRef(request);
        if (ref.namespace === namespace && ref.name === endpoint) enqueue(request);
      }
    };
    // Delivery reads an endpoint's spec (its clients and consents), never its status.
    const onEndpoint = (ep: MtlsEndpoint) => enqueueNaming(ep.metadata?.namespace, ep.metadata?.name);
    this.endpoints.on('add', onEndpoint);
    this.endpoints.on('delete', onEndpoint);
    this.endpoints.onSpecUpdate(onEndpoint);
    for (const verb of ['add', 'update', 'delete'] as const) {
      const onCopyOrSource = (obj: V1Secret | V1ConfigMap) => {
        const labels = obj.metadata?.labels ?? {};
        enqueueNaming(obj.metadata?.namespace, labels[ENDPOINT_LABEL]);
        const request = labels[CREDENTIAL_REQUEST_LABEL];
        if (request) this.queue.add(`${obj.metadata!.namespace}/${request}`);
      };
      this.secrets.on(verb, onCopyOrSource);
      this.configMaps.on(verb, onCopyOrSource);
    }
  }

  private get informers() {
    return [this.requests, this.endpoints, this.secrets, this.configMaps] as ResilientInformer<
      MtlsEndpoint | MtlsCredentialRequest | V1Secret | V1ConfigMap
    >[];
  }

  /** The informers this controller made (the shared ones are its owner's to start and stop). */
  private get ownInformers() {
    const shared = new Set<unknown>([this.options.shared?.endpoints, this.options.shared?.secrets]);
    return this.informers.filter((informer) => !shared.has(informer));
  }

  async start(): Promise<void> {
    await Promise.all(this.ownInformers.map((informer) => informer.start()));
    await Promise.all(this.informers.map((informer) => informer.hasSynced()));
    this.workersDone = runWorkers(this.queue, this.options.workers ?? 2, (key) => this.reconcile(key), this.log);
    this.resyncTimer = setInterval(() => this.enqueueAll(), this.options.resyncMs ?? 10 * 60_000);
    this.enqueueAll();
    // Copies whose request is gone (deleted while the operator was down, in a cluster without a garbage
    // collector) are found through their label.
    for (const obj of [...this.secrets.list(), ...this.configMaps.list()]) {
      const request = obj.metadata?.labels?.[CREDENTIAL_REQUEST_LABEL];
      if (request) this.queue.add(`${obj.metadata!.namespace}/${request}`);
    }
  }

  private enqueueAll(): void {
    for (const ep of this.endpoints.list()) {
      this.queue.add(`${BUNDLE_KEY_PREFIX}${ep.metadata!.namespace}/${ep.metadata!.name}`);
    }
    for (const r of this.requests.list()) this.queue.add(`${r.metadata!.namespace}/${r.metadata!.name}`);
  }

  async stop(): Promise<void> {
    clearInterval(this.resyncTimer);
    this.queue.shutDown();
    await Promise.all(this.ownInformers.map((informer) => informer.stop()));
    await this.workersDone;
  }

  async reconcile(key: string): Promise<ReconcileResult> {
    if (key.startsWith(BUNDLE_KEY_PREFIX)) return this.reconcileCaBundle(key.slice(BUNDLE_KEY_PREFIX.length));
    const [namespace, name] = key.split('/') as [string, string];
    const request = this.requests.get(name, namespace);
    const isCopy = (obj: V1Secret | V1ConfigMap) => isCopyOf(obj, name);
    const deliveredSecrets = this.secrets.list(namespace).filter(isCopy);
    const deliveredConfigMaps = this.configMaps.list(namespace).filter(isCopy);
    if (!request || request.metadata?.deletionTimestamp) {
      // Withdrawn by the receiving side: the owner reference lets the garbage collector do this too, later.
      for (const write of withdrawals(deliveredObjects({ deliveredSecrets, deliveredConfigMaps })))
        await this.perform(namespace, write);
      return {};
    }
    const ref = endpointRef(request);
    const target = targetName(request);
    const source = this.secrets.get(sourceSecretName(request), ref.namespace);
    const snapshot = {
      request,
      endpoint: this.endpoints.get(ref.name, ref.namespace),
      source,
      deliveredSecrets,
      deliveredConfigMaps,
      // Learnt only from a create answering 409 (below): each pass tries again, so a name freed is used.
      targetTaken: false,
      keystores: undefined as DeliverySnapshot['keystores'],
      now: this.now(),
    };
    // PKCS#12 stores (a password read and PBKDF2) only for a copy that will be written: a request blocked on a
    // missing consent is looked at every pass.
    if (!deliveryBlocked(snapshot)) {
      snapshot.keystores = await this.keystores(
        request,
        source,
        deliveredSecrets.find((s) => s.metadata?.name === target),
      );
    }
    let decision = decideDelivery(snapshot);
    try {
      for (const write of decision.writes) await this.perform(namespace, write);
    } catch (err) {
      const create = decision.writes.find((w) => w.verb === 'create');
      if (!create || !isConflict(err) || !(await this.heldByOther(namespace, create.kind, target, isCopy))) throw err;
      decision = decideDelivery({ ...snapshot, targetTaken: true });
    }
    await this.patchStatus(request, decision.status);
    await this.recordEvent(request, decision);
    if (decision.writes.length > 0 || decision.reason !== 'Delivered') {
      this.log.info('delivery', { request: key, reason: decision.reason, writes: decision.writes.length });
    }
    // A name held by someone else, or a password Secret missing (neither is watched), is looked at again.
    if (decision.reason === 'KeystorePasswordMissing') return { requeueAfterMs: KEYSTORE_PASSWORD_RETRY_MS };
    return decision.reason === 'TargetConflict' ? { requeueAfterMs: 30_000 } : {};
  }

  /** What `kubectl describe mtlscr` shows: each copy written or withdrawn, and each new reason it is not delivered. */
  private async recordEvent(request: MtlsCredentialRequest, decision: DeliveryDecision): Promise<void> {
    const ready = decision.status.conditions?.find((c) => c.type === 'Ready');
    const before = request.status?.conditions?.find((c) => c.type === 'Ready');
    const written = decision.writes.filter((w) => w.verb !== 'delete');
    const deleted = decision.writes.flatMap((w) => (w.verb === 'delete' ? [`${w.kind} ${w.name}`] : []));
    const target = targetName(request);
    if (written.length > 0) {
      const d = decision.status.delivered;
      const serial = d?.serialNumber ? `, certificate serial ${d.serialNumber}` : '';
      const cas = d ? `, CA serials ${d.caSerialNumbers.join(' ')}` : '';
      await this.events.record(request, 'Normal', 'Delivered', `Wrote ${d?.kind ?? 'copy'} ${target}${serial}${cas}`);
    }
    if (deleted.length > 0 && decision.reason !== 'Delivered') {
      await this.events.record(
        request,
        'Normal',
        'Withdrawn',
        `Deleted ${deleted.join(', ')}: ${ready?.message ?? ''}`,
      );
    }
    if (ready && ready.reason !== 'Delivered' && ready.reason !== before?.reason) {
      await this.events.record(request, 'Warning', ready.reason, ready.message);
    }
  }

  /** The request's own keystores, built with the password from its namespace (undefined when it asks for none). */
  private async keystores(
    request: MtlsCredentialRequest,
    source: V1Secret | undefined,
    existing: V1Secret | undefined,
  ): Promise<DeliverySnapshot['keystores']> {
    const pkcs12 = requestedPkcs12(request);
    const [certPem, keyPem, caPem] = [SECRET_KEYS.tlsCert, SECRET_KEYS.tlsKey, SECRET_KEYS.caCert].map((k) =>
      secretText(source, k),
    );
    if (!pkcs12 || !certPem || !keyPem || !caPem) return undefined;
    const namespace = request.metadata!.namespace!;
    const secret = await this.core
      .readNamespacedSecret({ namespace, name: pkcs12.passwordSecret })
      .catch((err: unknown) => {
        if (isNotFound(err)) return undefined;
        throw err;
      });
    const password = keystorePassword(secret, pkcs12, {
      namespace,
      client: request.spec.client!,
      field: 'spec.keystores.pkcs12.passwordSecretRef',
    });
    const content = await pkcs12Content({
      request: pkcs12,
      password,
      existing,
      alias: request.spec.client!,
      certPem,
      keyPem,
      caPem,
    });
    return { content, problem: 'problem' in password ? password.problem : undefined };
  }

  /** The endpoint's own `<endpoint>-ca-bundle` ConfigMap (operator/delivery/ca-bundle.ts). */
  private async reconcileCaBundle(key: string): Promise<ReconcileResult> {
    const [namespace, name] = key.split('/') as [string, string];
    const configMapName = caBundleConfigMapName(name);
    const existing = this.configMaps.get(configMapName, namespace);
    const owned = existing?.metadata?.labels?.[ENDPOINT_LABEL] === name ? existing : undefined;
    const server = this.secrets.get(serverSecretName(name), namespace);
    const ep = this.endpoints.get(name, namespace);
    const writes: DeliveryWrite[] =
      !ep || ep.metadata?.deletionTimestamp
        ? owned
          ? [{ verb: 'delete', kind: 'ConfigMap', name: configMapName, uid: owned.metadata?.uid }]
          : []
        : caBundleWrites(ep, server?.metadata?.labels?.[ENDPOINT_LABEL] === name ? server : undefined, owned);
    try {
      for (const write of writes) await this.perform(namespace, write);
    } catch (err) {
      const create = writes.some((w) => w.verb === 'create');
      const mine = (obj: V1ConfigMap) => obj.metadata?.labels?.[ENDPOINT_LABEL] === name;
      if (!create || !isConflict(err) || !(await this.heldByOther(namespace, 'ConfigMap', configMapName, mine))) {
        throw err;
      }
      this.log.warn('a ConfigMap the operator did not make has the CA bundle name; leaving it alone', {
        namespace,
        configMap: configMapName,
        endpoint: name,
      });
      return { requeueAfterMs: 5 * 60_000 };
    }
    return {};
  }

  /** After a create answered 409: is the name held by an object that is not ours (or was our cache behind)? */
  private async heldByOther(
    namespace: string,
    kind: 'Secret' | 'ConfigMap',
    target: string,
    mine: (obj: V1Secret | V1ConfigMap) => boolean,
  ) {
    try {
      const obj =
        kind === 'Secret'
          ? await this.core.readNamespacedSecret({ namespace, name: target })
          : await this.core.readNamespacedConfigMap({ namespace, name: target });
      return !mine(obj);
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  private async patchStatus(request: MtlsCredentialRequest, status: MtlsCredentialRequest['status']): Promise<void> {
    const plain = (value: unknown): unknown => JSON.parse(JSON.stringify(value ?? {}));
    if (isDeepStrictEqual(plain(request.status), plain(status))) return;
    this.writes++;
    // A merge patch removes `delivered` only when told so with null.
    const body = {
      metadata: { resourceVersion: request.metadata?.resourceVersion },
      status: { ...status, delivered: status?.delivered ?? null },
    };
    await this.custom.patchNamespacedCustomObjectStatus(
      { ...REQUEST_RESOURCE, namespace: request.metadata!.namespace!, name: request.metadata!.name!, body },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
  }

  private async perform(namespace: string, write: DeliveryWrite): Promise<void> {
    this.writes++;
    this.log.debug('write', { verb: write.verb, kind: write.kind, namespace });
    switch (write.verb) {
      case 'create':
        if (write.kind === 'Secret') await this.core.createNamespacedSecret({ namespace, body: write.body });
        else await this.core.createNamespacedConfigMap({ namespace, body: write.body });
        return;
      case 'replace': {
        const name = write.body.metadata!.name!;
        if (write.kind === 'Secret') await this.core.replaceNamespacedSecret({ namespace, name, body: write.body });
        else await this.core.replaceNamespacedConfigMap({ namespace, name, body: write.body });
        return;
      }
      case 'delete': {
        const body = write.uid ? { preconditions: { uid: write.uid } } : undefined;
        try {
          if (write.kind === 'Secret') await this.core.deleteNamespacedSecret({ namespace, name: write.name, body });
          else await this.core.deleteNamespacedConfigMap({ namespace, name: write.name, body });
        } catch (err) {
          if (!isNotFound(err)) throw err;
        }
      }
    }
  }
}
