import {
  AdmissionregistrationV1Api,
  ApiextensionsV1Api,
  CoordinationV1Api,
  CustomObjectsApi,
  DiscoveryV1Api,
  type KubeConfig,
} from '@kubernetes/client-node';
import { request } from 'node:https';
import { REQUEST_CRD_NAME } from '../api/credential-request.ts';
import { CRD_NAME, ENDPOINT_RESOURCE, type MtlsEndpoint } from '../api/types.ts';
import { type CheckSnapshot, checkReport, checkTable } from '../cli/check-view.ts';
import { kubeContext, KUBE_FLAGS, OUTPUT_FLAG } from '../cli/context.ts';
import { outputFormat, render } from '../cli/output.ts';
import { helpText, parseFlags, UsageError } from '../../common/flags.ts';
import { isNotFound } from '../kube/errors.ts';
import { errorMessage } from '../log.ts';

// The chart's names for a release called mtls-operator (charts/mtls-operator/templates).
const FLAGS = {
  ...KUBE_FLAGS,
  'all-namespaces': { type: 'boolean', short: 'A', help: 'check the MtlsEndpoints of every namespace' },
  within: { type: 'string', value: 'DAYS', help: 'report certificates expiring within this many days', default: '30' },
  'operator-namespace': {
    type: 'string',
    value: 'NS',
    help: "the operator's namespace (default: the webhook Service's, else mtls-system)",
  },
  'lease-name': { type: 'string', value: 'NAME', help: "the operator's leader Lease", default: 'mtls-operator-leader' },
  'webhook-configuration': {
    type: 'string',
    value: 'NAME',
    help: "the operator's MutatingWebhookConfiguration",
    default: 'mtls-operator',
  },
  ...OUTPUT_FLAG,
} as const;

/** undefined for 404, the error's words otherwise: a check must say "forbidden" rather than "missing". */
async function read<T>(what: () => Promise<T>): Promise<{ value?: T; error?: string }> {
  try {
    return { value: await what() };
  } catch (err) {
    return isNotFound(err) ? {} : { error: errorMessage(err) };
  }
}

/** An HTTPS request to the webhook URL, trusting only its caBundle: any HTTP answer means it is reachable. */
function probeUrl(url: string, caBundle: string | undefined): Promise<string | undefined> {
  return new Promise((resolve) => {
    const req = request(
      url,
      { method: 'GET', ca: caBundle ? Buffer.from(caBundle, 'base64') : undefined, timeout: 5_000 },
      (res) => {
        res.resume();
        resolve(undefined);
      },
    );
    req.on('timeout', () => req.destroy(new Error('no answer within 5s')));
    req.on('error', (err) => resolve(err.message));
    req.end();
  });
}

export async function gatherCheck(
  kc: KubeConfig,
  flags: {
    allNamespaces: boolean;
    operatorNamespace?: string;
    leaseName: string;
    webhookConfiguration: string;
    withinDays: number;
  },
  namespace: string,
): Promise<CheckSnapshot> {
  const crds = kc.makeApiClient(ApiextensionsV1Api);
  const crd = await read(() => crds.readCustomResourceDefinition({ name: CRD_NAME }));
  const requestCrd = await read(() => crds.readCustomResourceDefinition({ name: REQUEST_CRD_NAME }));
  const webhook = await read(() =>
    kc.makeApiClient(AdmissionregistrationV1Api).readMutatingWebhookConfiguration({ name: flags.webhookConfiguration }),
  );
  const clientConfig = webhook.value?.webhooks?.[0]?.clientConfig;
  const operatorNamespace = flags.operatorNamespace ?? clientConfig?.service?.namespace ?? 'mtls-system';
  const lease = await read(() =>
    kc.makeApiClient(CoordinationV1Api).readNamespacedLease({ namespace: operatorNamespace, name: flags.leaseName }),
  );
  const snapshot: CheckSnapshot = {
    now: new Date(),
    withinDays: flags.withinDays,
    crd: crd.value,
    crdError: crd.error,
    requestCrd: requestCrd.value,
    requestCrdError: requestCrd.error,
    operatorNamespace,
    leaseName: flags.leaseName,
    lease: lease.value,
    leaseError: lease.error,
    webhookConfigurationName: flags.webhookConfiguration,
    webhookConfiguration: webhook.value,
    webhookConfigurationError: webhook.error,
    scope: flags.allNamespaces ? 'all namespaces' : `namespace ${namespace}`,
  };
  if (clientConfig?.service) {
    const { name, namespace: ns } = clientConfig.service;
    const slices = await read(() =>
      kc
        .makeApiClient(DiscoveryV1Api)
        .listNamespacedEndpointSlice({ namespace: ns, labelSelector: `kubernetes.io/service-name=${name}` }),
    );
    const ready = (slices.value?.items ?? []).flatMap((slice) =>
      (slice.endpoints ?? []).filter((e) => e.conditions?.ready !== false),
    );
    snapshot.webhookService = { namespace: ns, name, readyEndpoints: ready.length, error: slices.error };
  } else if (clientConfig?.url) {
    snapshot.webhookUrl = { url: clientConfig.url, error: await probeUrl(clientConfig.url, clientConfig.caBundle) };
  }
  if (crd.value) {
    const custom = kc.makeApiClient(CustomObjectsApi);
    const list = await read(
      () =>
        (flags.allNamespaces
          ? custom.listClusterCustomObject(ENDPOINT_RESOURCE)
          : custom.listNamespacedCustomObject({ ...ENDPOINT_RESOURCE, namespace })) as Promise<{
          items: MtlsEndpoint[];
        }>,
    );
    snapshot.endpoints = list.value?.items;
    snapshot.endpointsError = list.error;
  }
  return snapshot;
}

export async function run(argv: string[]): Promise<number> {
  const { flags, positionals, help } = parseFlags(FLAGS, argv);
  if (help) {
    process.stdout.write(helpText('check', '[-n NS | -A] [--within DAYS] [-o table|json|yaml]', FLAGS));
    return 0;
  }
  const format = outputFormat(flags.output);
  if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  const withinDays = Number(flags.within);
  if (!Number.isFinite(withinDays) || withinDays < 0)
    throw new UsageError(`--within: "${flags.within}" is not a number of days`);
  const { kc, namespace } = kubeContext(flags);
  const snapshot = await gatherCheck(
    kc,
    {
      allNamespaces: flags['all-namespaces'],
      operatorNamespace: flags['operator-namespace'],
      leaseName: flags['lease-name'],
      webhookConfiguration: flags['webhook-configuration'],
      withinDays,
    },
    namespace,
  );
  const report = checkReport(snapshot);
  process.stdout.write(render(format, report, checkTable));
  return report.problems === 0 ? 0 : 1;
}
