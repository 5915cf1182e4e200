import {
  CoreV1Api,
  CustomObjectsApi,
  type KubeConfig,
  NetworkingV1Api,
  type V1NetworkPolicy,
  type V1Pod,
  type V1Secret,
  type V1Service,
} from '@kubernetes/client-node';
import {
  ENDPOINT_LABEL,
  ENDPOINT_RESOURCE,
  INJECT_ANNOTATION,
  MANAGED_BY_LABEL,
  MANAGED_BY_VALUE,
  type MtlsEndpoint,
  RENEW_REQUESTED_ANNOTATION,
} from '../api/types.ts';
import { isNotFound } from '../kube/errors.ts';
import { EventRecorder } from '../kube/events.ts';
import { customObjectList, ResilientInformer } from '../kube/informer.ts';
import { selectorMatches } from '../kube/selectors.ts';
import { logger } from '../log.ts';
import type { OperatorMetrics } from '../metrics.ts';
import { type ClusterView, EndpointReconciler } from './endpoint-reconciler.ts';
import { KubeWriter } from './kube-writer.ts';
import { runWorkers } from './run-workers.ts';
import { WorkQueue } from './workqueue.ts';

export interface ControllerOptions {
  kubeConfig: KubeConfig;
  metrics: OperatorMetrics;
  workers?: number;
  resyncMs?: number;
  caPropagationDelayMs?: number;
  now?: () => Date;
  /** The injected sidecar's admin port (--sidecar-admin-port), which listeners may not use. */
  sidecarAdminPort?: number;
  /** Watch one namespace only (tests, or a namespace-scoped install); all namespaces by default. */
  namespace?: string;
}

const MANAGED = `${MANAGED_BY_LABEL}=${MANAGED_BY_VALUE}`;

/**
 * Every pod of the cluster is watched (an endpoint must see the selected pods that run without the sidecar),
 * so only what the controller reads of a pod is kept: names, labels, the opt-out annotation, deletion,
 * phase and container names (init containers too: the sidecar is one), and the pod IP and Ready condition (a
 * ready pod's sidecar is asked what `upstreamProtocol: auto` found). A pod's spec and status are most of its size.
 */
export function trimPod(pod: V1Pod): void {
  const optOut = pod.metadata?.annotations?.[INJECT_ANNOTATION];
  if (pod.metadata) pod.metadata.annotations = optOut === undefined ? undefined : { [INJECT_ANNOTATION]: optOut };
  const names = (containers: { name: string }[] | undefined) => containers?.map((c) => ({ name: c.name }));
  if (pod.spec) pod.spec = { containers: names(pod.spec.containers)!, initContainers: names(pod.spec.initContainers) };
  if (pod.status) {
    const ready = pod.status.conditions
      ?.filter((c) => c.type === 'Ready')
      .map((c) => ({ type: c.type, status: c.status }));
    pod.status = { phase: pod.status.phase, podIP: pod.status.podIP, conditions: ready };
  }
}

/**
 * Wires informers (MtlsEndpoints, and the Secrets, Services and NetworkPolicies the operator owns) to a rate-limited work
 * queue keyed by namespace/name, and runs the reconciler on it. Owned objects map back to their endpoint
 * through the `mtls.operator.dev/endpoint` label, so a deleted or edited Secret is repaired at once.
 */
export class EndpointController {
  readonly queue: WorkQueue;
  readonly writer: KubeWriter;
  private readonly log = logger('controller');
  private readonly endpoints: ResilientInformer<MtlsEndpoint>;
  private readonly secrets: ResilientInformer<V1Secret>;
  private readonly services: ResilientInformer<V1Service>;
  private readonly networkPolicies: ResilientInformer<V1NetworkPolicy>;
  private readonly pods: ResilientInformer<V1Pod>;
  private readonly reconciler: EndpointReconciler;
  private readonly options: ControllerOptions;
  private resyncTimer: NodeJS.Timeout | undefined;
  private workersDone: Promise<unknown> | undefined;

  constructor(options: ControllerOptions) {
    this.options = options;
    this.queue = new WorkQueue({ metrics: options.metrics.workQueueMetrics('mtlsendpoint') });
    const kc = options.kubeConfig;
    const custom = kc.makeApiClient(CustomObjectsApi);
    const core = kc.makeApiClient(CoreV1Api);
    const { group, version, plural } = ENDPOINT_RESOURCE;
    const ns = options.namespace;
    const scope = ns ? `/namespaces/${ns}` : '';
    this.endpoints = new ResilientInformer<MtlsEndpoint>(
      kc,
      `/apis/${group}/${version}${scope}/${plural}`,
      () =>
        customObjectList<MtlsEndpoint>(
          ns
            ? custom.listNamespacedCustomObject({ group, version, plural, namespace: ns })
            : custom.listClusterCustomObject({ group, version, plural }),
        ),
      { name: 'mtlsendpoints' },
    );
    this.secrets = new ResilientInformer<V1Secret>(
      kc,
      `/api/v1${scope}/secrets`,
      () =>
        ns
          ? core.listNamespacedSecret({ namespace: ns, labelSelector: MANAGED })
          : core.listSecretForAllNamespaces({ labelSelector: MANAGED }),
      { labelSelector: MANAGED, name: 'secrets' },
    );
    this.services = new ResilientInformer<V1Service>(
      kc,
      `/api/v1${scope}/services`,
      () =>
        ns
          ? core.listNamespacedService({ namespace: ns, labelSelector: MANAGED })
          : core.listServiceForAllNamespaces({ labelSelector: MANAGED }),
      { labelSelector: MANAGED, name: 'services' },
    );
    const networking = kc.makeApiClient(NetworkingV1Api);
    this.networkPolicies = new ResilientInformer<V1NetworkPolicy>(
      kc,
      `/apis/networking.k8s.io/v1${scope}/networkpolicies`,
      () =>
        ns
          ? networking.listNamespacedNetworkPolicy({ namespace: ns, labelSelector: MANAGED })
          : networking.listNetworkPolicyForAllNamespaces({ labelSelector: MANAGED }),
      { labelSelector: MANAGED, name: 'networkpolicies' },
    );
    this.pods = new ResilientInformer<V1Pod>(
      kc,
      `/api/v1${scope}/pods`,
      () => (ns ? core.listNamespacedPod({ namespace: ns }) : core.listPodForAllNamespaces()),
      { name: 'pods', transform: trimPod },
    );
    this.writer = new KubeWriter(kc);
    const view: ClusterView = {
      endpoint: (ns, name) => this.endpoints.get(name, ns),
      secret: (ns, name) => this.secrets.get(name, ns),
      secretsOf: (ns, ep) => this.secrets.list(ns).filter((s) => s.metadata?.labels?.[ENDPOINT_LABEL] === ep),
      servicesOf: (ns, ep) => this.services.list(ns).filter((s) => s.metadata?.labels?.[ENDPOINT_LABEL] === ep),
      networkPoliciesOf: (ns, ep) =>
        this.networkPolicies.list(ns).filter((p) => p.metadata?.labels?.[ENDPOINT_LABEL] === ep),
      pods: (ns) => this.pods.list(ns),
    };
    this.reconciler = new EndpointReconciler({
      view,
      writer: this.writer,
      events: new EventRecorder(kc, 'mtls-operator'),
      metrics: options.metrics,
      now: options.now ?? (() => new Date()),
      caPropagationDelayMs: options.caPropagationDelayMs ?? 5 * 60_000,
      resyncMs: options.resyncMs ?? 10 * 60_000,
      sidecarAdminPort: options.sidecarAdminPort,
      readSecret: (namespace, name) =>
        core.readNamespacedSecret({ namespace, name }).catch((err: unknown) => {
          if (isNotFound(err)) return undefined;
          throw err;
        }),
    });

    const enqueue = (obj: MtlsEndpoint) => this.queue.add(`${obj.metadata!.namespace}/${obj.metadata!.name}`);
    this.endpoints.on('add', enqueue);
    this.endpoints.on('delete', enqueue);
    // Not its own status writes; a renewal request is an annotation, which leaves the generation alone.
    this.endpoints.onSpecUpdate(enqueue, (obj) => obj.metadata?.annotations?.[RENEW_REQUESTED_ANNOTATION] ?? '');
    type Owned = V1Secret | V1Service | V1NetworkPolicy;
    const enqueueOwner = (obj: Owned) => {
      const endpoint = obj.metadata?.labels?.[ENDPOINT_LABEL];
      if (endpoint && obj.metadata?.namespace) this.queue.add(`${obj.metadata.namespace}/${endpoint}`);
    };
    this.watchPods();
    for (const informer of [this.secrets, this.services, this.networkPolicies] as ResilientInformer<Owned>[]) {
      informer.on('add', enqueueOwner);
      informer.on('update', enqueueOwner);
      informer.on('delete', enqueueOwner);
    }
  }

  /** The endpoint and managed-Secret caches, for the delivery controller to read instead of keeping its own. */
  get sharedInformers(): { endpoints: ResilientInformer<MtlsEndpoint>; secrets: ResilientInformer<V1Secret> } {
    return { endpoints: this.endpoints, secrets: this.secrets };
  }

  private get informers() {
    return [this.endpoints, this.secrets, this.services, this.networkPolicies, this.pods] as ResilientInformer<never>[];
  }

  /** A pod's arrival, departure or relabelling changes the injected count of the endpoints selecting it. */
  private watchPods(): void {
    const enqueueSelecting = (pod: V1Pod) => {
      const namespace = pod.metadata?.namespace;
      if (!namespace) return;
      for (const ep of this.endpoints.list(namespace)) {
        if (selectorMatches(ep.spec.podSelector, pod.metadata?.labels ?? {}))
          this.queue.add(`${namespace}/${ep.metadata!.name}`);
      }
    };
    this.pods.on('add', enqueueSelecting);
    this.pods.on('delete', enqueueSelecting);
    this.pods.on('update', enqueueSelecting);
  }

  async start(): Promise<void> {
    await Promise.all(this.informers.map((informer) => informer.start()));
    await Promise.all(this.informers.map((informer) => informer.hasSynced()));
    this.log.info('caches synced; starting workers', { workers: this.options.workers ?? 2 });
    this.workersDone = runWorkers(
      this.queue,
      this.options.workers ?? 2,
      (key) => this.reconciler.reconcile(key),
      this.log,
    );
    const resyncMs = this.options.resyncMs ?? 10 * 60_000;
    this.resyncTimer = setInterval(() => this.enqueueAll(), resyncMs);
    this.enqueueAll();
  }

  private enqueueAll(): void {
    for (const ep of this.endpoints.list()) this.queue.add(`${ep.metadata!.namespace}/${ep.metadata!.name}`);
  }

  async stop(): Promise<void> {
    clearInterval(this.resyncTimer);
    this.queue.shutDown();
    await Promise.all(this.informers.map((informer) => informer.stop()));
    await this.workersDone;
  }
}
