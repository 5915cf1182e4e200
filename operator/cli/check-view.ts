import type { V1CustomResourceDefinition, V1Lease, V1MutatingWebhookConfiguration } from '@kubernetes/client-node';
import { REQUEST_CRD_NAME } from '../api/credential-request.ts';
import { CRD_NAME, type MtlsEndpoint, VERSION } from '../api/types.ts';
import { relative } from './output.ts';

/** What `check` read; `undefined` objects were not found, `*Error`s are reads that failed otherwise. */
export interface CheckSnapshot {
  now: Date;
  withinDays: number;
  crd?: V1CustomResourceDefinition;
  crdError?: string;
  /** The MtlsCredentialRequest CRD (delivery of credentials to other namespaces). */
  requestCrd?: V1CustomResourceDefinition;
  requestCrdError?: string;
  operatorNamespace: string;
  leaseName: string;
  lease?: V1Lease;
  leaseError?: string;
  webhookConfigurationName: string;
  webhookConfiguration?: V1MutatingWebhookConfiguration;
  webhookConfigurationError?: string;
  /** For a configuration calling a Service: its ready endpoints. For a URL: whether an HTTPS request verified with the caBundle got an answer. */
  webhookService?: { namespace: string; name: string; readyEndpoints: number; error?: string };
  webhookUrl?: { url: string; error?: string };
  /** Where endpoints were listed: a namespace, or all. */
  scope: string;
  endpoints?: MtlsEndpoint[];
  endpointsError?: string;
}

export interface CheckResult {
  check: string;
  ok: boolean;
  message: string;
  /** What to do about a problem. */
  hint?: string;
}

export interface CheckReport {
  checks: CheckResult[];
  problems: number;
}

function crdCheck(
  check: string,
  name: string,
  crd: V1CustomResourceDefinition | undefined,
  error: string | undefined,
): CheckResult {
  if (!crd) {
    return {
      check,
      ok: false,
      message: error ?? `CustomResourceDefinition ${name} is not installed`,
      hint: 'kubectl apply --server-side -f crds/ (or install the chart)',
    };
  }
  const established = crd.status?.conditions?.find((c) => c.type === 'Established')?.status === 'True';
  const served = crd.spec.versions.filter((v) => v.served).map((v) => v.name);
  const storage = crd.spec.versions.find((v) => v.storage)?.name ?? '?';
  if (!established) {
    return {
      check,
      ok: false,
      message: `${name} is not Established yet`,
      hint: `kubectl describe crd ${name}`,
    };
  }
  if (!served.includes(VERSION)) {
    return {
      check,
      ok: false,
      message: `${name} serves ${served.join(', ') || 'no version'}, not ${VERSION}, the version this CLI speaks`,
      hint: 'upgrade the CRD and the operator to the version of this CLI, or use the CLI of the installed version',
    };
  }
  return { check, ok: true, message: `${name} serves ${served.join(', ')} (storage ${storage})` };
}

function leaderCheck(s: CheckSnapshot): CheckResult {
  const check = 'operator running and leading';
  const where = `Lease ${s.operatorNamespace}/${s.leaseName}`;
  const hint = `kubectl -n ${s.operatorNamespace} get pods,deployments; kubectl -n ${s.operatorNamespace} logs deployment/mtls-operator (--operator-namespace and --lease-name if installed elsewhere)`;
  if (!s.lease)
    return { check, ok: false, message: s.leaseError ?? `${where} not found: no operator has ever led`, hint };
  const holder = s.lease.spec?.holderIdentity;
  const renewed = s.lease.spec?.renewTime ?? s.lease.spec?.acquireTime;
  const durationMs = (s.lease.spec?.leaseDurationSeconds ?? 15) * 1000;
  if (!holder)
    return {
      check,
      ok: false,
      message: `${where} has no holder: the last leader released it and none took over`,
      hint,
    };
  if (!renewed || new Date(renewed).getTime() + durationMs < s.now.getTime()) {
    return {
      check,
      ok: false,
      message: `${where} held by ${holder} but last renewed ${relative(renewed, s.now)}, longer ago than its ${durationMs / 1000}s duration: no operator is leading`,
      hint,
    };
  }
  return { check, ok: true, message: `${holder} leads (${where} renewed ${relative(renewed, s.now)})` };
}

function webhookChecks(s: CheckSnapshot): CheckResult[] {
  const check = 'webhook configured';
  const config = s.webhookConfiguration;
  if (!config) {
    return [
      {
        check,
        ok: false,
        message:
          s.webhookConfigurationError ??
          `MutatingWebhookConfiguration ${s.webhookConfigurationName} not found: no pod is injected`,
        hint: 'install the chart (or pass --webhook-configuration NAME if it has another name)',
      },
    ];
  }
  const hooks = config.webhooks ?? [];
  const missing = hooks.filter((h) => !h.clientConfig.caBundle).map((h) => h.name);
  const configured: CheckResult =
    hooks.length === 0
      ? { check, ok: false, message: `MutatingWebhookConfiguration ${s.webhookConfigurationName} has no webhooks` }
      : missing.length > 0
        ? {
            check,
            ok: false,
            message: `MutatingWebhookConfiguration ${s.webhookConfigurationName}: no caBundle on ${missing.join(', ')}: the API server cannot call it`,
            hint: 'the operator fills it in at start: is it running? (see the leader check)',
          }
        : { check, ok: true, message: `MutatingWebhookConfiguration ${s.webhookConfigurationName} has a caBundle` };
  const reach = 'webhook reachable';
  let reachable: CheckResult;
  if (s.webhookService) {
    const svc = `Service ${s.webhookService.namespace}/${s.webhookService.name}`;
    reachable = s.webhookService.error
      ? { check: reach, ok: false, message: `${svc}: ${s.webhookService.error}` }
      : s.webhookService.readyEndpoints > 0
        ? { check: reach, ok: true, message: `${svc} has ${s.webhookService.readyEndpoints} ready endpoint(s)` }
        : {
            check: reach,
            ok: false,
            message: `${svc} has no ready endpoints: pods created now are not injected (failurePolicy Ignore) or refused (Fail)`,
            hint: `kubectl -n ${s.webhookService.namespace} get pods,endpointslices -l app.kubernetes.io/name=mtls-operator`,
          };
  } else if (s.webhookUrl) {
    reachable = s.webhookUrl.error
      ? {
          check: reach,
          ok: false,
          message: `${s.webhookUrl.url}: ${s.webhookUrl.error}`,
          hint: 'is the operator serving its webhook there, with the certificate of the caBundle?',
        }
      : { check: reach, ok: true, message: `${s.webhookUrl.url} answers over TLS verified with the caBundle` };
  } else {
    reachable = { check: reach, ok: false, message: 'the webhook names neither a Service nor a URL' };
  }
  return [configured, reachable];
}

function endpointChecks(s: CheckSnapshot): CheckResult[] {
  if (!s.endpoints) {
    return [
      { check: 'endpoints', ok: false, message: s.endpointsError ?? `could not list MtlsEndpoints in ${s.scope}` },
    ];
  }
  const notReady = s.endpoints.filter(
    (ep) => ep.status?.conditions?.find((c) => c.type === 'Ready')?.status !== 'True',
  );
  const name = (ep: MtlsEndpoint) => `${ep.metadata?.namespace}/${ep.metadata?.name}`;
  const ready: CheckResult =
    notReady.length === 0
      ? {
          check: 'endpoints Ready',
          ok: true,
          message: `${s.endpoints.length} MtlsEndpoint(s) in ${s.scope}, all Ready`,
        }
      : {
          check: 'endpoints Ready',
          ok: false,
          message: notReady
            .map((ep) => {
              const c = ep.status?.conditions?.find((x) => x.type === 'Ready');
              return `${name(ep)}: ${c ? `${c.reason}: ${c.message}` : 'no status yet'}`;
            })
            .join('; '),
          hint: 'kubectl mtls status ENDPOINT -n NAMESPACE',
        };
  const limit = s.now.getTime() + s.withinDays * 86_400_000;
  const expiring: string[] = [];
  for (const ep of s.endpoints) {
    const st = ep.status ?? {};
    const certs = [
      ['CA', st.ca],
      ['server', st.server],
      ...(st.clients ?? []).map((c) => [`client ${c.name}`, c] as const),
    ] as const;
    for (const [what, cert] of certs) {
      if (cert && new Date(cert.notAfter).getTime() <= limit) {
        expiring.push(
          `${name(ep)} ${what} (serial ${cert.serialNumber}) expires ${cert.notAfter}, ${relative(cert.notAfter, s.now)}`,
        );
      }
    }
  }
  const expiry: CheckResult =
    expiring.length === 0
      ? { check: 'certificates', ok: true, message: `none expires within ${s.withinDays} day(s)` }
      : {
          check: 'certificates',
          ok: false,
          message: `${expiring.length} expire within ${s.withinDays} day(s): ${expiring.join('; ')}`,
          hint: 'a certificate past its renewal time means the operator is not renewing: see the leader check; kubectl mtls renew ENDPOINT re-issues at once',
        };
  return [ready, expiry];
}

/** Every check, in the order a person reads them: API, operator, webhook, then the endpoints. */
export function checkReport(s: CheckSnapshot): CheckReport {
  const crd = crdCheck('CRD installed', CRD_NAME, s.crd, s.crdError);
  const requestCrd = crdCheck('MtlsCredentialRequest CRD installed', REQUEST_CRD_NAME, s.requestCrd, s.requestCrdError);
  const checks = [crd, requestCrd, leaderCheck(s), ...webhookChecks(s), ...(crd.ok ? endpointChecks(s) : [])];
  return { checks, problems: checks.filter((c) => !c.ok).length };
}

/** `linkerd check` style: one line per check, a hint under each problem, a closing verdict. */
export function checkTable(report: CheckReport): string {
  const lines = report.checks.map(
    (c) => `${c.ok ? '√' : '×'} ${c.check}: ${c.message}\n${!c.ok && c.hint ? `    hint: ${c.hint}\n` : ''}`,
  );
  const verdict =
    report.problems === 0
      ? 'Status check results are √\n'
      : `Status check results are ×: ${report.problems} problem(s)\n`;
  return lines.join('') + '\n' + verdict;
}
