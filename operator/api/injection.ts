import type { V1Container, V1Pod } from '@kubernetes/client-node';
import { DEFAULT_ADMIN_PORT, type TestListenerKind } from '../../sidecar/flags.ts';

/** Names of contract 3 (injection) that the webhook writes and the controller and tests read. */
export const SIDECAR_CONTAINER = 'mtls-sidecar';
export const SIDECAR_VOLUME = 'mtls-server-tls';
/** An empty volume over the service-account token path keeps the API token out of the sidecar. */
export const NO_API_TOKEN_VOLUME = 'mtls-no-api-token';
export const SERVICE_ACCOUNT_TOKEN_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';
export const SIDECAR_TLS_DIR = '/var/run/mtls-operator/tls';
/** The injected sidecar's admin port unless the operator is told otherwise (--sidecar-admin-port): the sidecar's own default. */
export const SIDECAR_ADMIN_PORT = DEFAULT_ADMIN_PORT;
/** Annotation the webhook sets on an injected pod: the endpoint whose sidecar it got. */
export const INJECTED_ANNOTATION = 'mtls.operator.dev/injected-by';
/**
 * A pod's own sidecar log level (error, warn, info or debug), over the operator's --sidecar-log-level: one
 * workload's sidecars can log at debug while the rest stay at info (Linkerd's config.linkerd.io/proxy-log-level).
 */
export const SIDECAR_LOG_LEVEL_ANNOTATION = 'mtls.operator.dev/sidecar-log-level';
/** The sidecar's container port for health and /metrics: the probes and the chart's PodMonitor name it. */
export const ADMIN_PORT_NAME = 'mtls-admin';
/** Set on injected pods (unless the pod has its own) so annotation-based Prometheus discovery scrapes the sidecar. */
export const PROMETHEUS_SCRAPE_ANNOTATION = 'prometheus.io/scrape';
export const PROMETHEUS_PORT_ANNOTATION = 'prometheus.io/port';
export const PROMETHEUS_PATH_ANNOTATION = 'prometheus.io/path';
export const listenerPortName = (mode: string) => `mtls-${mode}`;
/** The Secret volume of spec.testListeners' bad certificates, and where the sidecar reads it (--test-tls-dir). */
export const TEST_SERVERS_VOLUME = 'mtls-test-servers';
export const SIDECAR_TEST_TLS_DIR = '/var/run/mtls-operator/test-servers';
const TEST_PORT_NAMES: Record<TestListenerKind, string> = {
  ExpiredCertificate: 'bad-expired',
  UntrustedCA: 'bad-untrusted',
  WrongHost: 'bad-wronghost',
  TLS12Only: 'bad-tls12only',
  TLS13Only: 'bad-tls13only',
  ClientCAMismatch: 'bad-clientca',
};
/** The container port name of a test listener (at most 15 characters, as port names must be). */
export const testListenerPortName = (kind: TestListenerKind) => TEST_PORT_NAMES[kind];

/**
 * The injected sidecar of a pod, or undefined: a native sidecar (an init container with restartPolicy Always)
 * since the webhook injects it so; a regular container in pods injected by earlier versions.
 */
export function sidecarContainerOf(pod: V1Pod): V1Container | undefined {
  const named = (containers: V1Container[] | undefined) => containers?.find((c) => c.name === SIDECAR_CONTAINER);
  return named(pod.spec?.initContainers) ?? named(pod.spec?.containers);
}
