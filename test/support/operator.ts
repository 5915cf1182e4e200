import * as k8s from '@kubernetes/client-node';
import { EndpointController } from '../../operator/controller/manager.ts';
import { freePort } from '../../operator/controlplane/local-control-plane.ts';
import { OperatorMetrics } from '../../operator/metrics.ts';
import { Webhook } from '../../operator/webhook/webhook.ts';
import { kubeConfig } from './cluster.ts';

/**
 * The operator in-process for one test namespace: a controller scoped to it and a loopback webhook that
 * owns its own MutatingWebhookConfiguration (a unique name per suite; `stop` removes it).
 */
export async function startOperator(namespace: string, { resyncMs = 2_000 } = {}) {
  const port = await freePort();
  const configurationName = `mtls-operator-test-${namespace}`;
  const webhook = new Webhook({
    kubeConfig: kubeConfig(),
    port,
    host: '127.0.0.1',
    url: `https://127.0.0.1:${port}/mutate-pods`,
    configurationName,
    // Only this suite's namespace: suites run in parallel and each has its own webhook.
    namespaceSelector: {
      matchLabels: { 'kubernetes.io/metadata.name': namespace, 'mtls.operator.dev/injection': 'enabled' },
    },
    namespace,
    secretName: 'webhook-tls',
    serviceName: 'unused',
    settings: { image: 'registry.invalid/mtls-operator:test' },
    isLeader: () => true,
  });
  await webhook.start();
  const controller = new EndpointController({
    kubeConfig: kubeConfig(),
    metrics: new OperatorMetrics(),
    namespace,
    resyncMs,
  });
  await controller.start();
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
