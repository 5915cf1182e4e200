import { KubeConfig } from '@kubernetes/client-node';
import { createServer } from 'node:http';
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { parseDuration } from '../api/duration.ts';
import { EndpointController } from '../controller/manager.ts';
import { helpText, parseFlags, UsageError } from '../flags.ts';
import { LeaderElector } from '../kube/leader-election.ts';
import { errorMessage, logger } from '../log.ts';
import { OperatorMetrics } from '../metrics.ts';
import { untilSignal } from './run-until-signal.ts';

export const CONTROLLER_FLAGS = {
  kubeconfig: {
    type: 'string',
    value: 'FILE',
    help: 'kubeconfig to use (default: KUBECONFIG, ~/.kube/config, or in-cluster)',
  },
  'metrics-port': { type: 'string', value: 'N', help: 'port of /metrics, /healthz and /readyz', default: '8080' },
  'metrics-address': { type: 'string', value: 'HOST', help: 'address the metrics port binds to', default: '0.0.0.0' },
  'webhook-port': { type: 'string', value: 'N', help: 'port of the admission webhook', default: '9443' },
  'webhook-url': {
    type: 'string',
    value: 'URL',
    help: 'manage a MutatingWebhookConfiguration calling this URL (outside a cluster)',
  },
  'leader-elect': { type: 'boolean', help: 'elect a leader on a Lease so only one replica writes', default: true },
  'no-leader-elect': { type: 'boolean', help: 'run without leader election (a single replica)' },
  'leader-election-namespace': {
    type: 'string',
    value: 'NS',
    help: 'namespace of the Lease (default: POD_NAMESPACE or default)',
  },
  'ca-propagation-delay': {
    type: 'string',
    value: 'DURATION',
    help: 'how long a new CA is trusted before it signs, and the old one after',
    default: '5m',
  },
  resync: { type: 'string', value: 'DURATION', help: 'look at every endpoint at least this often', default: '10m' },
  workers: { type: 'string', value: 'N', help: 'endpoints reconciled in parallel', default: '2' },
  namespace: { type: 'string', value: 'NS', help: 'watch only this namespace (default: all namespaces)' },
} as const;

function port(flag: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new UsageError(`--${flag}: "${value}" is not a port number`);
  return n;
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
  const log = logger('operator');
  const kc = new KubeConfig();
  if (flags.kubeconfig) kc.loadFromFile(flags.kubeconfig);
  else kc.loadFromDefault();

  const metrics = new OperatorMetrics();
  const controller = new EndpointController({
    kubeConfig: kc,
    metrics,
    workers: Number(flags.workers) || 2,
    resyncMs: duration('resync', flags.resync),
    caPropagationDelayMs: duration('ca-propagation-delay', flags['ca-propagation-delay']),
    namespace: flags.namespace,
  });
  let ready = false;
  const server = createServer(async (req, res) => {
    if (req.url === '/metrics') {
      res.setHeader('content-type', metrics.registry.contentType);
      res.end(await metrics.registry.metrics());
    } else if (req.url === '/healthz') {
      res.end('ok');
    } else if (req.url === '/readyz') {
      res.statusCode = ready ? 200 : 503;
      res.end(ready ? 'ok' : 'not ready');
    } else {
      res.statusCode = 404;
      res.end('not found');
    }
  });
  const metricsPort = port('metrics-port', flags['metrics-port']);
  await new Promise<void>((resolve) => server.listen(metricsPort, flags['metrics-address'], resolve));
  log.info('serving metrics and health', { address: server.address() });

  const leaderElect = flags['leader-elect'] && !flags['no-leader-elect'];
  const identity = `${hostname()}-${randomBytes(4).toString('hex')}`;
  const elector = leaderElect
    ? new LeaderElector(kc, {
        namespace: flags['leader-election-namespace'] ?? process.env.POD_NAMESPACE ?? 'default',
        name: 'mtls-operator-leader',
        identity,
      })
    : undefined;

  let exitCode = 0;
  const stopped = untilSignal();
  const lost = new Promise<void>((resolve) => {
    const startController = () => {
      controller.start().then(
        () => {
          ready = true;
        },
        (err: unknown) => {
          log.error('controller failed to start', { error: errorMessage(err) });
          exitCode = 1;
          resolve();
        },
      );
    };
    if (!elector) return startController();
    ready = true; // a standby is healthy and ready: it serves the webhook and waits for the lease
    void elector.run({
      onStartedLeading: startController,
      onStoppedLeading: () => {
        exitCode = 1;
        resolve();
      },
    });
  });
  await Promise.race([stopped, lost]);
  log.info('shutting down');
  await controller.stop();
  await elector?.stop();
  server.close();
  return exitCode;
}
