import type { V1Container, V1Pod, V1SecurityContext, V1Volume } from '@kubernetes/client-node';
import { applyDefaults } from '../api/defaults.ts';
import {
  ADMIN_PORT_NAME,
  INJECTED_ANNOTATION,
  listenerPortName,
  NO_API_TOKEN_VOLUME,
  PROMETHEUS_PATH_ANNOTATION,
  PROMETHEUS_PORT_ANNOTATION,
  PROMETHEUS_SCRAPE_ANNOTATION,
  SERVICE_ACCOUNT_TOKEN_DIR,
  SIDECAR_ADMIN_PORT,
  SIDECAR_CONTAINER,
  SIDECAR_LOG_LEVEL_ANNOTATION,
  SIDECAR_TLS_DIR,
  SIDECAR_TEST_TLS_DIR,
  SIDECAR_VOLUME,
  sidecarContainerOf,
  TEST_SERVERS_VOLUME,
  testListenerPortName,
} from '../api/injection.ts';
import { INJECT_ANNOTATION, type MtlsEndpoint, serverSecretName, testServersSecretName } from '../api/types.ts';
import { renderSidecarArgs, SIDECAR_LOG_LEVELS, SIDECAR_NODE_OPTIONS } from '../../sidecar/flags.ts';
import { APP_PRESTOP_SLEEP_SECONDS, DEFAULT_SIDECAR_RESOURCES } from '../defaults.ts';
import type { LogFormat } from '../../common/log-text.ts';
import { selectorMatches } from '../kube/selectors.ts';

/** Secret volume files are root-owned; mode 0440 plus group 0 lets the non-root sidecar (and nobody else
 * in the pod: only the sidecar mounts the volume) read the key. */
export const SECRET_VOLUME_MODE = 0o440;

export interface InjectorSettings {
  image: string;
  imagePullPolicy?: string;
  logLevel?: string;
  /** json (the sidecar's default) or text. */
  logFormat?: LogFormat;
  resources?: V1Container['resources'];
  /** Merged over SIDECAR_SECURITY_CONTEXT, e.g. a fixed runAsUser where the platform assigns none. */
  securityContext?: V1SecurityContext;
  /** The sidecar's admin port (health, /metrics); SIDECAR_ADMIN_PORT unless the chart's sidecar.adminPort says otherwise. */
  adminPort?: number;
}

const adminPortOf = (settings: InjectorSettings) => settings.adminPort ?? SIDECAR_ADMIN_PORT;

export type InjectionDecision =
  | { action: 'skip'; reason: string }
  | { action: 'deny'; message: string }
  | { action: 'inject'; endpoint: string; patch: JsonPatchOp[] };

export interface JsonPatchOp {
  op: 'add' | 'replace';
  path: string;
  value: unknown;
}

/** The endpoints of the pod's namespace whose podSelector matches the pod's labels. */
export function selectingEndpoints(pod: V1Pod, endpoints: readonly MtlsEndpoint[]): MtlsEndpoint[] {
  const labels = pod.metadata?.labels ?? {};
  return endpoints.filter((ep) => !ep.metadata?.deletionTimestamp && selectorMatches(ep.spec.podSelector, labels));
}

export function isInjected(pod: V1Pod): boolean {
  return sidecarContainerOf(pod) !== undefined;
}

/** Where `kubectl logs` and `kubectl exec` land when no container is named. */
export const DEFAULT_CONTAINER_ANNOTATION = 'kubectl.kubernetes.io/default-container';

/**
 * The sidecar container for an endpoint, with args rendered from the sidecar's own flag definitions. It is a
 * native sidecar (an init container with restartPolicy Always): kubelet starts the app only once its startup
 * probe passes, and stops it only after the app has exited, so the app never runs without its TLS front.
 */
export function sidecarContainer(ep: MtlsEndpoint, settings: InjectorSettings): V1Container {
  const spec = applyDefaults(ep.spec);
  const adminPort = adminPortOf(settings);
  const args = renderSidecarArgs({
    listen: spec.listeners.map((l) => ({ mode: l.mode, port: l.port, protocol: l.protocol })),
    upstream: `127.0.0.1:${spec.upstreamPort}`,
    upstreamProtocol: spec.upstreamProtocol,
    proxyProtocol: spec.proxyProtocol,
    tlsDir: SIDECAR_TLS_DIR,
    testListen: spec.testListeners ?? [],
    testTlsDir: SIDECAR_TEST_TLS_DIR,
    admin: `0.0.0.0:${adminPort}`,
    allowClients: spec.allowedClients ?? [],
    logLevel: settings.logLevel,
    logFormat: settings.logFormat,
  });
  const probe = (path: string) => ({ httpGet: { path, port: ADMIN_PORT_NAME }, periodSeconds: 10 });
  return {
    name: SIDECAR_CONTAINER,
    image: settings.image,
    imagePullPolicy: settings.imagePullPolicy ?? 'IfNotPresent',
    args: ['sidecar', ...args],
    env: [{ name: 'NODE_OPTIONS', value: SIDECAR_NODE_OPTIONS }],
    ports: [
      ...spec.listeners.map((l) => ({ name: listenerPortName(l.mode), containerPort: l.port, protocol: 'TCP' })),
      ...(spec.testListeners ?? []).map((l) => ({
        name: testListenerPortName(l.kind),
        containerPort: l.port,
        protocol: 'TCP',
      })),
      { name: ADMIN_PORT_NAME, containerPort: adminPort, protocol: 'TCP' },
    ],
    // The ServiceAccount admission plugin skips a container that already mounts the token path.
    volumeMounts: [
      { name: SIDECAR_VOLUME, mountPath: SIDECAR_TLS_DIR, readOnly: true },
      ...(spec.testListeners?.length
        ? [{ name: TEST_SERVERS_VOLUME, mountPath: SIDECAR_TEST_TLS_DIR, readOnly: true }]
        : []),
      { name: NO_API_TOKEN_VOLUME, mountPath: SERVICE_ACCOUNT_TOKEN_DIR, readOnly: true },
    ],
    restartPolicy: 'Always',
    // Polled every second so the app starts as soon as the sidecar serves (it loads its Secret in milliseconds).
    startupProbe: { ...probe('/readyz'), periodSeconds: 1, failureThreshold: 120 },
    readinessProbe: probe('/readyz'),
    livenessProbe: probe('/healthz'),
    resources: settings.resources ?? DEFAULT_SIDECAR_RESOURCES,
    securityContext: { ...SIDECAR_SECURITY_CONTEXT, ...settings.securityContext },
  };
}

/**
 * Non-root without a fixed user: the image's numeric USER (65532) applies, or the one the platform assigns
 * (OpenShift's restricted policy refuses a fixed runAsUser outside the namespace's range). Group 0 reads the
 * Secret volume (SECRET_VOLUME_MODE).
 */
export const SIDECAR_SECURITY_CONTEXT: V1SecurityContext = {
  runAsNonRoot: true,
  runAsGroup: 0,
  readOnlyRootFilesystem: true,
  allowPrivilegeEscalation: false,
  privileged: false,
  capabilities: { drop: ['ALL'] },
  seccompProfile: { type: 'RuntimeDefault' },
};

export function sidecarVolumes(ep: MtlsEndpoint): V1Volume[] {
  return [
    {
      name: SIDECAR_VOLUME,
      secret: { secretName: serverSecretName(ep.metadata!.name!), defaultMode: SECRET_VOLUME_MODE },
    },
    ...(ep.spec.testListeners?.length
      ? [
          {
            name: TEST_SERVERS_VOLUME,
            secret: { secretName: testServersSecretName(ep.metadata!.name!), defaultMode: SECRET_VOLUME_MODE },
          },
        ]
      : []),
    { name: NO_API_TOKEN_VOLUME, emptyDir: { medium: 'Memory', sizeLimit: '1Ki' } },
  ];
}

/**
 * Decides what happens to a Pod at admission, as Linkerd's and Istio's injectors do: opted-out and already
 * injected pods are left alone (so re-admission changes nothing), a pod two endpoints select is refused
 * with a message naming both, and otherwise the sidecar (a native sidecar), its volumes, a preStop wait for
 * the app's containers and the annotations are added.
 */
export function decideInjection(
  pod: V1Pod,
  endpoints: readonly MtlsEndpoint[],
  settings: InjectorSettings,
): InjectionDecision {
  if (pod.metadata?.annotations?.[INJECT_ANNOTATION] === 'false') return { action: 'skip', reason: 'opted out' };
  if (isInjected(pod)) return { action: 'skip', reason: 'already injected' };
  const matching = selectingEndpoints(pod, endpoints);
  if (matching.length === 0) return { action: 'skip', reason: 'no MtlsEndpoint selects this pod' };
  if (matching.length > 1) {
    const names = matching.map((ep) => ep.metadata!.name).sort();
    return {
      action: 'deny',
      message: `pod is selected by ${matching.length} MtlsEndpoints (${names.join(', ')}); a pod can have one mTLS sidecar. Make their spec.podSelector disjoint, or annotate the pod ${INJECT_ANNOTATION}: "false"`,
    };
  }
  const ep = matching[0]!;
  const patch: JsonPatchOp[] = [];
  const spec = pod.spec ?? { containers: [] };
  // Every container that runs beside the app claims its ports: the app's and other native sidecars'.
  const running = [
    ...(spec.containers ?? []),
    ...(spec.initContainers ?? []).filter((c) => c.restartPolicy === 'Always'),
  ];
  const taken = new Set(running.flatMap((c) => (c.ports ?? []).map((p) => p.containerPort)));
  const adminPort = adminPortOf(settings);
  const defaulted = applyDefaults(ep.spec);
  const listeners = [...defaulted.listeners, ...(defaulted.testListeners ?? [])];
  const clash = listeners.find((l) => taken.has(l.port));
  if (clash) {
    return {
      action: 'deny',
      message: `MtlsEndpoint ${ep.metadata!.name}: port ${clash.port} is already used by a container of this pod; choose other spec.listeners (or spec.testListeners) ports`,
    };
  }
  if (taken.has(adminPort) || listeners.some((l) => l.port === adminPort)) {
    return {
      action: 'deny',
      message: `MtlsEndpoint ${ep.metadata!.name}: port ${adminPort} is the mTLS sidecar's admin port (health and metrics) and is already used by ${taken.has(adminPort) ? 'a container of this pod' : 'spec.listeners'}; move it, or install the operator with another sidecar.adminPort (--sidecar-admin-port)`,
    };
  }
  const logLevel = pod.metadata?.annotations?.[SIDECAR_LOG_LEVEL_ANNOTATION];
  if (logLevel !== undefined && !(SIDECAR_LOG_LEVELS as readonly string[]).includes(logLevel)) {
    return {
      action: 'deny',
      message: `annotation ${SIDECAR_LOG_LEVEL_ANNOTATION}: "${logLevel}" is not a sidecar log level; use one of ${SIDECAR_LOG_LEVELS.join(', ')}`,
    };
  }
  const sidecar = sidecarContainer(ep, logLevel ? { ...settings, logLevel } : settings);
  if (spec.initContainers) patch.push({ op: 'add', path: '/spec/initContainers/-', value: sidecar });
  else patch.push({ op: 'add', path: '/spec/initContainers', value: [sidecar] });
  patch.push(...preStopWaits(spec));
  if (spec.volumes)
    for (const volume of sidecarVolumes(ep)) patch.push({ op: 'add', path: '/spec/volumes/-', value: volume });
  else patch.push({ op: 'add', path: '/spec/volumes', value: sidecarVolumes(ep) });
  const annotations: Record<string, string> = {
    [INJECTED_ANNOTATION]: ep.metadata!.name!,
    ...scrapeAnnotations(pod, adminPort),
  };
  const appContainer = spec.containers?.[0]?.name;
  if (appContainer && !pod.metadata?.annotations?.[DEFAULT_CONTAINER_ANNOTATION])
    annotations[DEFAULT_CONTAINER_ANNOTATION] = appContainer;
  if (pod.metadata?.annotations) {
    for (const [key, value] of Object.entries(annotations))
      patch.push({ op: 'add', path: `/metadata/annotations/${escapePointer(key)}`, value });
  } else {
    patch.push({ op: 'add', path: '/metadata/annotations', value: annotations });
  }
  return { action: 'inject', endpoint: ep.metadata!.name!, patch };
}

/**
 * A preStop wait (`APP_PRESTOP_SLEEP_SECONDS`, at most half the grace period) for each app container without
 * a preStop hook of its own: it keeps the pod serving while its endpoints are withdrawn. A hook the pod
 * already has is the app's own shutdown and is left alone.
 */
function preStopWaits(spec: NonNullable<V1Pod['spec']>): JsonPatchOp[] {
  const seconds = Math.min(APP_PRESTOP_SLEEP_SECONDS, Math.floor((spec.terminationGracePeriodSeconds ?? 30) / 2));
  if (seconds < 1) return [];
  const preStop = { sleep: { seconds } };
  return (spec.containers ?? []).flatMap((container, index): JsonPatchOp[] => {
    if (container.lifecycle?.preStop) return [];
    return container.lifecycle
      ? [{ op: 'add', path: `/spec/containers/${index}/lifecycle/preStop`, value: preStop }]
      : [{ op: 'add', path: `/spec/containers/${index}/lifecycle`, value: { preStop } }];
  });
}

/**
 * The prometheus.io annotations that point Prometheus's annotation-based pod discovery (the `kubernetes-pods`
 * job of its example configuration and of most charts) at the sidecar's /metrics. A pod can name one scrape
 * target this way: when the pod already has any of them, its owner scrapes the app itself and they are left
 * as they are (none added, none overwritten; the PodMonitor, which selects the admin port, still works).
 */
export function scrapeAnnotations(pod: V1Pod, adminPort: number): Record<string, string> {
  const existing = pod.metadata?.annotations ?? {};
  const ours = {
    [PROMETHEUS_SCRAPE_ANNOTATION]: 'true',
    [PROMETHEUS_PORT_ANNOTATION]: String(adminPort),
    [PROMETHEUS_PATH_ANNOTATION]: '/metrics',
  };
  return Object.keys(ours).some((key) => key in existing) ? {} : ours;
}

function escapePointer(segment: string): string {
  return segment.replace(/~/g, '~0').replace(/\//g, '~1');
}
