import { loadKubeConfig } from '../kube/kubeconfig.ts';
import { createServer } from 'node:http';
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { parseDuration } from '../api/duration.ts';
import { SIDECAR_ADMIN_PORT } from '../api/injection.ts';
import { EndpointController } from '../controller/manager.ts';
import { DeliveryController } from '../delivery/controller.ts';
import { DEFAULT_SIDECAR_IMAGE } from '../defaults.ts';
import { Webhook } from '../webhook/webhook.ts';
import { helpText, parseFlags, UsageError } from '../../common/flags.ts';
import { LeaderElector } from '../kube/leader-election.ts';
import { deploymentOwnerReference } from '../kube/owner.ts';
import { errorMessage, logger, setLogFormat, setLogLevel } from '../log.ts';
import { isLogFormat, LOG_FORMATS, LOG_LEVELS } from '../../common/log-text.ts';
import { OperatorMetrics } from '../metrics.ts';
import { untilSignal } from '../../common/signals.ts';

export const CONTROLLER_FLAGS = {
  'log-level': { type: 'string', value: 'LEVEL', help: 'error, warn, info or debug (default: MTLS_LOG_LEVEL or info)' },
  'log-format': {
    type: 'string',
    value: 'FORMAT',
    help: 'json (one object per line) or text (default: MTLS_LOG_FORMAT or json)',
  },
  kubeconfig: { type: 'string', value: 'FILE', help: 'kubeconfig (default: KUBECONFIG, ~/.kube/config, in-cluster)' },
  namespace: { type: 'string', value: 'NS', help: 'watch only this namespace (default: all namespaces)' },
  'operator-namespace': {
    type: 'string',
    value: 'NS',
    help: 'namespace of the Lease and the webhook Secret (default: POD_NAMESPACE or default)',
  },
  'metrics-port': { type: 'string', value: 'N', help: 'port of /metrics, /healthz and /readyz', default: '8080' },
  'metrics-address': { type: 'string', value: 'HOST', help: 'address the metrics port binds to', default: '0.0.0.0' },
  'webhook-port': { type: 'string', value: 'N', help: 'port of the admission webhook', default: '9443' },
  'webhook-address': { type: 'string', value: 'HOST', help: 'address the webhook binds to', default: '0.0.0.0' },
  'webhook-url': {
    type: 'string',
    value: 'URL',
    help: 'outside a cluster: own a MutatingWebhookConfiguration that calls this URL',
  },
  'webhook-configuration': {
    type: 'string',
    value: 'NAME',
    help: 'MutatingWebhookConfiguration kept in step',
    default: 'mtls-operator',
  },
  'webhook-service': {
    type: 'string',
    value: 'NAME',
    help: 'Service in front of the webhook (names in its certificate)',
    default: 'mtls-operator-webhook',
  },
  'webhook-secret': {
    type: 'string',
    value: 'NAME',
    help: "Secret of the webhook's serving certificate",
    default: 'mtls-operator-webhook-tls',
  },
  'no-webhook': { type: 'boolean', help: 'do not serve the admission webhook' },
  'sidecar-image': {
    type: 'string',
    value: 'IMAGE',
    help: 'image of the injected sidecar',
    default: DEFAULT_SIDECAR_IMAGE,
  },
  'sidecar-admin-port': {
    type: 'string',
    value: 'N',
    help: "port of injected sidecars' health and /metrics (listeners may not use it)",
    default: String(SIDECAR_ADMIN_PORT),
  },
  'sidecar-image-pull-policy': {
    type: 'string',
    value: 'POLICY',
    help: 'imagePullPolicy of injected sidecars',
    default: 'IfNotPresent',
  },
  'sidecar-log-level': { type: 'string', value: 'LEVEL', help: 'log level of injected sidecars', default: 'info' },
  'sidecar-log-format': { type: 'string', value: 'FORMAT', help: 'log format of injected sidecars: json or text' },
  'sidecar-security-context': {
    type: 'string',
    value: 'JSON',
    help: 'merged over injected sidecars\' securityContext, e.g. {"runAsUser":65532}',
  },
  'sidecar-resources': {
    type: 'string',
    value: 'JSON',
    help: 'resources of injected sidecars, e.g. {"requests":{"cpu":"10m"}}',
  },
  'lease-name': { type: 'string', value: 'NAME', help: 'the leader-election Lease', default: 'mtls-operator-leader' },
  'owner-deployment': {
    type: 'string',
    value: 'NAME',
    help: "the operator's Deployment (in --operator-namespace): owns the Lease and the webhook Secret, which go with it",
  },
  'leader-elect': { type: 'boolean', help: 'elect a leader on a Lease so only one replica writes', default: true },
  'no-leader-elect': { type: 'boolean', help: 'run without leader election (a single replica)' },
  'ca-propagation-delay': {
    type: 'string',
    value: 'DURATION',
    help: 'how long a new CA is trusted before it signs, and the old one after',
    default: '5m',
  },
  resync: { type: 'string', value: 'DURATION', help: 'look at every endpoint at least this often', default: '10m' },
  workers: { type: 'string', value: 'N', help: 'endpoints reconciled in parallel', default: '2' },
} as const;

function port(flag: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new UsageError(`--${flag}: "${value}" is not a port number`);
  return n;
}

function json<T>(flag: string, value: string): T {
  try {
    return JSON.parse(value) as T;
  } catch (err) {
    throw new UsageError(`--${flag}: not JSON (${(err as Error).message})`);
  }
}

const PULL_POLICIES = ['Always', 'IfNotPresent', 'Never'];

function logFormat(flag: string, value: string) {
  if (!isLogFormat(value)) throw new UsageError(`--${flag}: "${value}" is not one of ${LOG_FORMATS.join(', ')}`);
  return value;
}

function duration(flag: string, value: string): number {
  try {
    return parseDuration(value);
  } catch (err) {
    throw new UsageError(`--${flag}: ${(err as Error).message}`);
  }
}

export async function run(argv: string[]): Promise<number> {
  const { flags, help } = parseFlags(CONTROLLER_FLAGS, argv);
  if (help) {
    process.stdout.write(helpText('controller', '[flags]', CONTROLLER_FLAGS));
    return 0;
  }
  if (flags['log-level']) {
    if (!(LOG_LEVELS as readonly string[]).includes(flags['log-level'])) {
      throw new UsageError(`--log-level: "${flags['log-level']}" is not one of ${LOG_LEVELS.join(', ')}`);
    }
    setLogLevel(flags['log-level']);
  }
  if (flags['log-format']) setLogFormat(logFormat('log-format', flags['log-format']));
  const sidecarLogFormat = flags['sidecar-log-format']
    ? logFormat('sidecar-log-format', flags['sidecar-log-format'])
    : undefined;
  if (!PULL_POLICIES.includes(flags['sidecar-image-pull-policy'])) {
    throw new UsageError(
      `--sidecar-image-pull-policy: "${flags['sidecar-image-pull-policy']}" is not one of ${PULL_POLICIES.join(', ')}`,
    );
  }
  const log = logger('operator');
  const kc = loadKubeConfig(flags.kubeconfig);

  const sidecarAdminPort = port('sidecar-admin-port', flags['sidecar-admin-port']);
  if (sidecarAdminPort === 0) throw new UsageError('--sidecar-admin-port: 0 is not a port a probe can reach');
  const metrics = new OperatorMetrics({ processMetrics: true });
  const controller = new EndpointController({
    kubeConfig: kc,
    metrics,
    workers: Number(flags.workers) || 2,
    resyncMs: duration('resync', flags.resync),
    caPropagationDelayMs: duration('ca-propagation-delay', flags['ca-propagation-delay']),
    namespace: flags.namespace,
    sidecarAdminPort,
  });
  // Beside the endpoint controller, not part of its readiness: without the MtlsCredentialRequest CRD (an
  // install that has not applied it yet) its informers retry and say why, and endpoints are served as before.
  const delivery = new DeliveryController({
    kubeConfig: kc,
    metrics,
    resyncMs: duration('resync', flags.resync),
    namespace: flags.namespace,
    shared: controller.sharedInformers,
  });
  const operatorNamespace = flags['operator-namespace'] ?? process.env.POD_NAMESPACE ?? 'default';
  const owner = flags['owner-deployment']
    ? await deploymentOwnerReference(kc, operatorNamespace, flags['owner-deployment'])
    : undefined;
  const ownerReferences = owner ? [owner] : undefined;
  const leaderElect = flags['leader-elect'] && !flags['no-leader-elect'];
  const identity = `${hostname()}-${randomBytes(4).toString('hex')}`;
  const elector = leaderElect
    ? new LeaderElector(kc, {
        namespace: operatorNamespace,
        name: flags['lease-name'],
        identity,
        ownerReferences,
      })
    : undefined;

  const webhook = flags['no-webhook']
    ? undefined
    : new Webhook({
        kubeConfig: kc,
        port: port('webhook-port', flags['webhook-port']),
        host: flags['webhook-address'],
        url: flags['webhook-url'],
        configurationName: flags['webhook-configuration'],
        namespace: operatorNamespace,
        secretName: flags['webhook-secret'],
        serviceName: flags['webhook-service'],
        settings: {
          image: flags['sidecar-image'],
          imagePullPolicy: flags['sidecar-image-pull-policy'],
          logLevel: flags['sidecar-log-level'],
          logFormat: sidecarLogFormat,
          securityContext: flags['sidecar-security-context']
            ? json('sidecar-security-context', flags['sidecar-security-context'])
            : undefined,
          adminPort: sidecarAdminPort,
          resources: flags['sidecar-resources'] ? json('sidecar-resources', flags['sidecar-resources']) : undefined,
        },
        ownerReferences,
      });
  // Ready: this replica's webhook serves a certificate the API server trusts (so it injects), and, on the
  // leader, the controller has synced its caches. A standby is ready as soon as its webhook is.
  let controllerReady = false;
  const notReady = (): string | undefined =>
    webhook && !webhook.ready
      ? `webhook: ${webhook.notReadyReason ?? 'not ready'}`
      : controllerReady
        ? undefined
        : 'controller: starting';
  const server = createServer(async (req, res) => {
    if (req.url === '/metrics') {
      res.setHeader('content-type', metrics.registry.contentType);
      res.end(await metrics.registry.metrics());
    } else if (req.url === '/healthz') {
      res.end('ok');
    } else if (req.url === '/readyz') {
      const reason = notReady();
      res.statusCode = reason ? 503 : 200;
      res.end(reason ? `not ready: ${reason}` : 'ok');
    } else {
      res.statusCode = 404;
      res.end('not found');
    }
  });
  const metricsPort = port('metrics-port', flags['metrics-port']);
  await new Promise<void>((resolve) => server.listen(metricsPort, flags['metrics-address'], resolve));
  log.info('serving metrics and health', { address: server.address() });

  // Every replica makes the webhook usable itself (serving Secret, caBundle): injection never waits for a leader.
  await webhook?.start();

  let exitCode = 0;
  const stopped = untilSignal();
  const lost = new Promise<void>((resolve) => {
    const startController = () => {
      delivery.start().catch((err: unknown) => log.error('delivery failed to start', { error: errorMessage(err) }));
      controller.start().then(
        () => {
          controllerReady = true;
        },
        (err: unknown) => {
          log.error('controller failed to start', { error: errorMessage(err) });
          exitCode = 1;
          resolve();
        },
      );
    };
    const lease = { name: flags['lease-name'] };
    if (!elector) {
      metrics.leader.set(lease, 1); // the only replica
      return startController();
    }
    metrics.leader.set(lease, 0);
    controllerReady = true; // a standby waits for the lease; its readiness is its webhook's
    void elector.run({
      onStartedLeading: () => {
        metrics.leader.set(lease, 1);
        startController();
      },
      onStoppedLeading: () => {
        metrics.leader.set(lease, 0);
        exitCode = 1;
        resolve();
      },
    });
  });
  await Promise.race([stopped, lost]);
  log.info('shutting down');
  controllerReady = false;
  // The controller stops while the lease still guards it (bounded: the pod's grace period must leave time for
  // the release); then the lease is released, so a standby or the next pod leads at once, not a lease later.
  const stopController = () =>
    within(
      Promise.all([controller.stop(), delivery.stop()]).then(() => undefined),
      CONTROLLER_STOP_TIMEOUT_MS,
      log,
    );
  if (elector) await elector.stop(stopController);
  else await stopController();
  await webhook?.stop();
  server.close();
  return exitCode;
}

/** How long shutdown waits for reconciles in flight before releasing the lease anyway. */
const CONTROLLER_STOP_TIMEOUT_MS = 10_000;

async function within(work: Promise<void>, ms: number, log: ReturnType<typeof logger>): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const done = await Promise.race([
    work.then(() => true),
    new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms))),
  ]);
  clearTimeout(timer);
  if (!done) log.warn('the controller did not stop in time; going on with the shutdown', { timeoutMs: ms });
}
