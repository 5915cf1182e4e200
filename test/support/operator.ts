import * as k8s from '@kubernetes/client-node';
import { type ChildProcess, spawn } from 'node:child_process';
import { EndpointController } from '../../operator/controller/manager.ts';
import { freePort } from '../../local/controlplane/local-control-plane.ts';
import { OperatorMetrics } from '../../operator/metrics.ts';
import { Webhook } from '../../operator/webhook/webhook.ts';
import { kubeConfig, waitFor } from './cluster.ts';

/**
 * A webhook on loopback for one test namespace, with its own MutatingWebhookConfiguration (suites run in
 * parallel, each with its own webhook, selecting only its namespace). Not started.
 */
export async function loopbackWebhook(
  namespace: string,
  configurationName: string,
  timing: { verifyEveryMs?: number; retryMs?: number } = {},
) {
  const port = await freePort();
  const webhook = new Webhook({
    kubeConfig: kubeConfig(),
    port,
    host: '127.0.0.1',
    url: `https://127.0.0.1:${port}/mutate-pods`,
    configurationName,
    namespaceSelector: {
      matchLabels: { 'kubernetes.io/metadata.name': namespace, 'mtls.operator.dev/injection': 'enabled' },
    },
    namespace,
    secretName: 'webhook-tls',
    serviceName: 'unused',
    settings: { image: 'registry.invalid/mtls-operator:test' },
    ...timing,
  });
  return { webhook, port, configurationName };
}

/** A controller in-process, scoped to one test namespace, started (caches synced, workers running). */
export async function startController(
  namespace: string,
  { resyncMs = 2_000, caPropagationDelayMs }: { resyncMs?: number; caPropagationDelayMs?: number } = {},
): Promise<EndpointController> {
  const controller = new EndpointController({
    kubeConfig: kubeConfig(),
    metrics: new OperatorMetrics(),
    namespace,
    resyncMs,
    caPropagationDelayMs,
  });
  await controller.start();
  return controller;
}

/**
 * The operator in-process for one test namespace: a controller scoped to it and a loopback webhook that
 * owns its own MutatingWebhookConfiguration (a unique name per suite; `stop` removes it).
 */
export async function startOperator(
  namespace: string,
  { resyncMs = 2_000, caPropagationDelayMs }: { resyncMs?: number; caPropagationDelayMs?: number } = {},
) {
  const { webhook, configurationName } = await loopbackWebhook(namespace, `mtls-operator-test-${namespace}`);
  await webhook.start();
  const controller = await startController(namespace, { resyncMs, caPropagationDelayMs });
  return {
    webhook,
    controller,
    async stop() {
      await controller.stop();
      await webhook.stop();
      await kubeConfig()
        .makeApiClient(k8s.AdmissionregistrationV1Api)
        .deleteMutatingWebhookConfiguration({ name: configurationName })
        .catch(() => undefined);
    },
  };
}

const CLI = new URL('../../operator/cli.ts', import.meta.url).pathname;

export interface OperatorProcess {
  child: ChildProcess;
  metricsPort: number;
  output: string[];
  exited: Promise<number | null>;
}

/**
 * `mtls-operator controller` as a process, scoped to one namespace; without the webhook unless `webhook` is
 * set (then `extra` says where it listens and which configuration it keeps).
 */
export async function spawnOperator(
  kubeconfig: string,
  namespace: string,
  extra: string[] = [],
  output: string[] = [],
  { webhook = false }: { webhook?: boolean } = {},
): Promise<OperatorProcess> {
  const metricsPort = await freePort();
  const child = spawn(
    process.execPath,
    [
      CLI,
      'controller',
      '--kubeconfig',
      kubeconfig,
      '--namespace',
      namespace,
      '--operator-namespace',
      namespace,
      ...(webhook ? [] : ['--no-webhook']),
      '--metrics-address',
      '127.0.0.1',
      '--metrics-port',
      String(metricsPort),
      ...extra,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  child.stdout!.on('data', (d: Buffer) => output.push(d.toString()));
  child.stderr!.on('data', (d: Buffer) => output.push(d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, metricsPort, output, exited };
}

export async function waitHealthy(op: OperatorProcess): Promise<void> {
  await waitFor(
    'the operator to serve /healthz',
    async () => (await fetch(`http://127.0.0.1:${op.metricsPort}/healthz`)).ok,
  );
}
