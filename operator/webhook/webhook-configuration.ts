import {
  AdmissionregistrationV1Api,
  type KubeConfig,
  type V1LabelSelector,
  type V1MutatingWebhookConfiguration,
} from '@kubernetes/client-node';
import { INJECTION_NAMESPACE_LABEL } from '../api/types.ts';
import { isConflict, isNotFound } from '../kube/errors.ts';
import { logger } from '../log.ts';

export const WEBHOOK_NAME = 'inject.mtls.operator.dev';
export const WEBHOOK_PATH = '/mutate-pods';

export interface WebhookConfigurationOptions {
  /** Name of the MutatingWebhookConfiguration (the chart's, or the one created for --webhook-url). */
  name: string;
  /** Outside a cluster: the URL the API server calls; the configuration is then created and owned here. */
  url?: string;
  failurePolicy?: 'Ignore' | 'Fail';
  timeoutSeconds?: number;
  /** Which namespaces' pods are sent to the webhook; default: those labelled for injection. */
  namespaceSelector?: V1LabelSelector;
}

/** What a sync found: `missing` means the chart's configuration does not exist (nothing to write into). */
export type SyncOutcome = 'unchanged' | 'updated' | 'created' | 'missing';

/**
 * Keeps the MutatingWebhookConfiguration in step with the webhook's serving CA. With a URL it writes the
 * whole configuration (namespaceSelector on the injection label, Pod CREATE only, failurePolicy Ignore so
 * a down operator never blocks pod creation); otherwise it only updates `caBundle` in the chart's.
 *
 * Every replica calls it (injection must not wait for a leader), so it is idempotent and race-safe: it
 * writes only when the configuration differs, every write carries the resourceVersion it read, and a
 * conflict (another replica wrote first) or AlreadyExists is answered by reading again, which then usually
 * finds nothing left to do.
 */
export async function syncWebhookConfiguration(
  kc: KubeConfig,
  options: WebhookConfigurationOptions,
  caPem: string,
): Promise<SyncOutcome> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await syncOnce(kc, options, caPem);
    } catch (err) {
      if (!isConflict(err) || attempt >= 5) throw err;
    }
  }
}

async function syncOnce(kc: KubeConfig, options: WebhookConfigurationOptions, caPem: string): Promise<SyncOutcome> {
  const api = kc.makeApiClient(AdmissionregistrationV1Api);
  const log = logger('webhook-config');
  const caBundle = Buffer.from(caPem).toString('base64');
  let existing: V1MutatingWebhookConfiguration | undefined;
  try {
    existing = await api.readMutatingWebhookConfiguration({ name: options.name });
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  if (!options.url) {
    if (!existing) return 'missing';
    const webhooks = existing.webhooks ?? [];
    if (webhooks.every((w) => w.clientConfig.caBundle === caBundle)) return 'unchanged';
    await api.replaceMutatingWebhookConfiguration({
      name: options.name,
      body: { ...existing, webhooks: webhooks.map((w) => ({ ...w, clientConfig: { ...w.clientConfig, caBundle } })) },
    });
    log.info('updated caBundle of the MutatingWebhookConfiguration', { name: options.name });
    return 'updated';
  }
  const desired: V1MutatingWebhookConfiguration = {
    metadata: { name: options.name, labels: { 'app.kubernetes.io/managed-by': 'mtls-operator' } },
    webhooks: [
      {
        name: WEBHOOK_NAME,
        admissionReviewVersions: ['v1'],
        sideEffects: 'None',
        failurePolicy: options.failurePolicy ?? 'Ignore',
        timeoutSeconds: options.timeoutSeconds ?? 5,
        reinvocationPolicy: 'Never',
        namespaceSelector: options.namespaceSelector ?? { matchLabels: { [INJECTION_NAMESPACE_LABEL]: 'enabled' } },
        rules: [
          { apiGroups: [''], apiVersions: ['v1'], operations: ['CREATE'], resources: ['pods'], scope: 'Namespaced' },
        ],
        clientConfig: { url: options.url, caBundle },
      },
    ],
  };
  if (!existing) {
    await api.createMutatingWebhookConfiguration({ body: desired });
    log.info('created the MutatingWebhookConfiguration', { name: options.name, url: options.url });
    return 'created';
  }
  const current = existing.webhooks?.[0];
  if (
    existing.webhooks?.length === 1 &&
    current?.clientConfig.url === options.url &&
    current.clientConfig.caBundle === caBundle
  )
    return 'unchanged';
  await api.replaceMutatingWebhookConfiguration({
    name: options.name,
    body: { ...desired, metadata: { ...existing.metadata, ...desired.metadata } },
  });
  log.info('updated the MutatingWebhookConfiguration', { name: options.name, url: options.url });
  return 'updated';
}

/** The CA bundle (PEM) of each webhook of the configuration, '' where it has none; undefined if it is missing. */
export async function webhookCaBundles(kc: KubeConfig, name: string): Promise<string[] | undefined> {
  try {
    const existing = await kc.makeApiClient(AdmissionregistrationV1Api).readMutatingWebhookConfiguration({ name });
    return (existing.webhooks ?? []).map((w) =>
      w.clientConfig.caBundle ? Buffer.from(w.clientConfig.caBundle, 'base64').toString('utf8') : '',
    );
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}
