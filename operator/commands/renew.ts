import {
  AuthenticationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  type KubeConfig,
  PatchStrategy,
  setHeaderOptions,
} from '@kubernetes/client-node';
import { randomBytes } from 'node:crypto';
import { parseDuration } from '../api/duration.ts';
import { rfc3339, withRenewRequest } from '../api/renew-request.ts';
import { ENDPOINT_RESOURCE, type MtlsEndpoint, RENEW_REQUESTED_ANNOTATION } from '../api/types.ts';
import { kubeContext, KUBE_FLAGS, OUTPUT_FLAG } from '../cli/context.ts';
import { readEndpoint } from '../cli/endpoint.ts';
import { outputFormat, render } from '../cli/output.ts';
import {
  describeTarget,
  type RenewReport,
  renewedCertificates,
  renewTable,
  renewTarget,
  targetSerials,
} from '../cli/renew-view.ts';
import { helpText, parseFlags, UsageError } from '../../common/flags.ts';
import { isConflict } from '../kube/errors.ts';

const FLAGS = {
  ...KUBE_FLAGS,
  server: { type: 'boolean', help: 'renew the server certificate only' },
  client: { type: 'string', value: 'NAME', help: "renew this client's certificate only" },
  'no-wait': { type: 'boolean', help: 'return once requested, without waiting for the new certificates' },
  timeout: { type: 'string', value: 'DURATION', help: 'how long to wait for the new certificates', default: '60s' },
  ...OUTPUT_FLAG,
} as const;

/** The API server's clock (its Date header), so the controller never sees a request from its future. */
function serverTime(headers: Record<string, string>): Date {
  const date = new Date(headers.date ?? headers.Date ?? '');
  return Number.isNaN(date.getTime()) ? new Date() : date;
}

async function whoAmI(kc: KubeConfig): Promise<string> {
  try {
    const review = await kc.makeApiClient(AuthenticationV1Api).createSelfSubjectReview({ body: {} });
    return review.status?.userInfo?.username ?? 'an unknown user';
  } catch {
    return 'an unknown user';
  }
}

/** Adds the request to the annotation; a concurrent change of the endpoint (409) is read again and retried. */
async function request(kc: KubeConfig, namespace: string, name: string, flags: { client?: string; server: boolean }) {
  const custom = kc.makeApiClient(CustomObjectsApi);
  for (let attempt = 1; ; attempt++) {
    const info = await custom.getNamespacedCustomObjectWithHttpInfo({ ...ENDPOINT_RESOURCE, namespace, name });
    const ep = info.data as MtlsEndpoint;
    const target = renewTarget(ep, flags);
    const at = serverTime(info.headers);
    const value = withRenewRequest(ep.metadata?.annotations?.[RENEW_REQUESTED_ANNOTATION], target, at);
    try {
      await custom.patchNamespacedCustomObject(
        {
          ...ENDPOINT_RESOURCE,
          namespace,
          name,
          body: {
            metadata: {
              resourceVersion: ep.metadata?.resourceVersion,
              annotations: { [RENEW_REQUESTED_ANNOTATION]: value },
            },
          },
        },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      );
      return { ep, target, at };
    } catch (err) {
      if (!isConflict(err) || attempt >= 5) throw err;
    }
  }
}

export async function run(argv: string[]): Promise<number> {
  const { flags, positionals, help } = parseFlags(FLAGS, argv);
  if (help) {
    process.stdout.write(
      helpText('renew', 'ENDPOINT [--server | --client NAME] [-n NS] [--no-wait] [-o table|json|yaml]', FLAGS),
    );
    return 0;
  }
  const format = outputFormat(flags.output);
  if (positionals.length !== 1) throw new UsageError('expected one argument: the MtlsEndpoint name');
  if (flags.client !== undefined && flags.server) throw new UsageError('--client and --server exclude each other');
  let timeoutMs: number;
  try {
    timeoutMs = parseDuration(flags.timeout);
  } catch (err) {
    throw new UsageError(`--timeout: ${(err as Error).message}`);
  }
  const name = positionals[0]!;
  const { kc, namespace } = kubeContext(flags);
  const { ep, target, at } = await request(kc, namespace, name, flags);
  const requestedBy = await whoAmI(kc);
  const requestedAt = rfc3339(at);
  // The audit trail beside the controller's own RenewedOnRequest Events: who asked, and for what.
  await kc
    .makeApiClient(CoreV1Api)
    .createNamespacedEvent({
      namespace,
      body: {
        metadata: { name: `${name}.${randomBytes(8).toString('hex')}`, namespace },
        involvedObject: { apiVersion: ep.apiVersion, kind: ep.kind, name, namespace, uid: ep.metadata?.uid },
        type: 'Normal',
        reason: 'RenewRequested',
        message: `${requestedBy} requested the renewal of ${describeTarget(target)} (${RENEW_REQUESTED_ANNOTATION} at ${requestedAt})`,
        source: { component: 'kubectl-mtls' },
        reportingComponent: 'kubectl-mtls',
        firstTimestamp: at,
        lastTimestamp: at,
        count: 1,
      },
    })
    .catch((err: unknown) =>
      process.stderr.write(`warning: could not record the RenewRequested Event: ${(err as Error).message}\n`),
    );
  const before = targetSerials(ep, target);
  let outcome = renewedCertificates(before, before);
  if (!flags['no-wait']) {
    const deadline = Date.now() + timeoutMs;
    while (!outcome.done && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 500));
      outcome = renewedCertificates(before, targetSerials(await readEndpoint(kc, namespace, name), target));
    }
  }
  const report: RenewReport = {
    namespace,
    endpoint: name,
    target: target.kind === 'client' ? `client/${target.client}` : target.kind,
    requestedAt,
    requestedBy,
    waited: !flags['no-wait'],
    done: outcome.done,
    certificates: outcome.certificates,
  };
  process.stdout.write(render(format, report, renewTable));
  return report.waited && !report.done ? 1 : 0;
}
