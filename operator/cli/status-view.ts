import type { CoreV1Event, V1Pod } from '@kubernetes/client-node';
import { sidecarContainerOf } from '../api/injection.ts';
import { parseRenewRequests, rfc3339 } from '../api/renew-request.ts';
import {
  INJECT_ANNOTATION,
  type MtlsEndpoint,
  RENEW_REQUESTED_ANNOTATION,
  type CertificateStatus,
} from '../api/types.ts';
import { selectorMatches } from '../kube/selectors.ts';
import { relative, table } from './output.ts';

/** What `status ENDPOINT` reads from the cluster. */
export interface StatusSnapshot {
  endpoint: MtlsEndpoint;
  pods: readonly V1Pod[];
  events: readonly CoreV1Event[];
  /** Lists the user may not read (RBAC of a client team): said, not fatal. */
  unreadable?: readonly string[];
}

export interface CertificateRow {
  certificate: 'ca' | 'server' | 'client';
  client?: string;
  secretName?: string;
  serialNumber: string;
  notAfter: string;
  renewalTime: string;
}

export interface StatusReport {
  namespace: string;
  name: string;
  ready: string;
  /** status.observedGeneration behind metadata.generation: the controller has not looked at the last change yet. */
  upToDate: boolean;
  conditions: { type: string; status: string; reason: string; message: string; lastTransitionTime: string }[];
  certificates: CertificateRow[];
  caRollover: { phase: string; newCASerialNumber?: string; startedAt?: string } | null;
  modes: string;
  networkPolicy?: string;
  /** spec.upstreamProtocol, and for auto what a sidecar found (status.upstreamProtocol). */
  upstreamProtocol: string;
  pods: { injected: string[]; notInjected: string[]; optedOut: string[] };
  renewRequests: { target: string; requestedAt: string }[];
  renewRequestProblems: string[];
  events: { type: string; reason: string; message: string; count: number; lastSeen?: string }[];
  unreadable: string[];
}

const EVENTS_SHOWN = 10;

const eventTime = (e: CoreV1Event) =>
  new Date(e.lastTimestamp ?? e.eventTime ?? e.firstTimestamp ?? e.metadata?.creationTimestamp ?? 0).getTime();

/** The report of one endpoint: its status as the controller wrote it, its pods, its latest Events. */
export function statusReport(snapshot: StatusSnapshot): StatusReport {
  const { endpoint: ep } = snapshot;
  const status = ep.status ?? {};
  const row = (certificate: CertificateRow['certificate'], c: CertificateStatus, client?: string): CertificateRow => ({
    certificate,
    ...(client ? { client } : {}),
    ...(c.secretName ? { secretName: c.secretName } : {}),
    serialNumber: c.serialNumber,
    notAfter: c.notAfter,
    renewalTime: c.renewalTime,
  });
  const certificates = [
    ...(status.ca ? [row('ca', status.ca)] : []),
    ...(status.server ? [row('server', status.server)] : []),
    ...(status.clients ?? []).map((c) => row('client', c, c.name)),
  ];
  const pods = { injected: [] as string[], notInjected: [] as string[], optedOut: [] as string[] };
  for (const pod of snapshot.pods) {
    const phase = pod.status?.phase;
    if (pod.metadata?.deletionTimestamp || phase === 'Succeeded' || phase === 'Failed') continue;
    if (!selectorMatches(ep.spec.podSelector, pod.metadata?.labels ?? {})) continue;
    const name = pod.metadata!.name!;
    if (sidecarContainerOf(pod)) pods.injected.push(name);
    else if (pod.metadata?.annotations?.[INJECT_ANNOTATION] === 'false') pods.optedOut.push(name);
    else pods.notInjected.push(name);
  }
  for (const list of Object.values(pods)) list.sort();
  const requests = parseRenewRequests(ep.metadata?.annotations?.[RENEW_REQUESTED_ANNOTATION]);
  const events = snapshot.events
    .filter((e) => !ep.metadata?.uid || !e.involvedObject.uid || e.involvedObject.uid === ep.metadata.uid)
    .sort((a, b) => eventTime(b) - eventTime(a))
    .slice(0, EVENTS_SHOWN)
    .map((e) => ({
      type: e.type ?? 'Normal',
      reason: e.reason ?? '',
      message: e.message ?? '',
      count: e.count ?? e.series?.count ?? 1,
      ...(eventTime(e) ? { lastSeen: new Date(eventTime(e)).toISOString() } : {}),
    }));
  return {
    namespace: ep.metadata?.namespace ?? '',
    name: ep.metadata?.name ?? '',
    ready: status.conditions?.find((c) => c.type === 'Ready')?.status ?? 'Unknown',
    upToDate: status.observedGeneration === ep.metadata?.generation,
    conditions: (status.conditions ?? []).map(({ type, status, reason, message, lastTransitionTime }) => ({
      type,
      status,
      reason,
      message,
      lastTransitionTime,
    })),
    certificates,
    caRollover: status.caRollover ? { ...status.caRollover } : null,
    modes: status.modes ?? '',
    ...(status.networkPolicy ? { networkPolicy: status.networkPolicy } : {}),
    upstreamProtocol: upstreamProtocolLine(ep),
    pods,
    renewRequests: requests.entries.map((e) => ({ target: e.target, requestedAt: rfc3339(e.at) })),
    renewRequestProblems: requests.problems,
    events,
    unreadable: [...(snapshot.unreadable ?? [])].sort(),
  };
}

/** "http1", "h2c", or for auto what was found, from which pod, and why. */
function upstreamProtocolLine(ep: MtlsEndpoint): string {
  const requested = ep.spec.upstreamProtocol ?? 'http1';
  const found = ep.status?.upstreamProtocol;
  if (requested !== 'auto') return requested;
  if (!found) return 'auto (nothing reported yet)';
  const from = found.pod ? `, from pod ${found.pod}` : '';
  const when = found.probedAt ? ` at ${found.probedAt}` : '';
  return `auto: ${found.detected}${from}${when}${found.reason ? ` (${found.reason})` : ''}`;
}

const list = (names: string[]) => (names.length > 0 ? `: ${names.join(', ')}` : '');

/** `kubectl mtls status` for a terminal, in the spirit of `cmctl status certificate`. */
export function statusTable(report: StatusReport, now: Date): string {
  const parts: string[] = [];
  const ready = report.conditions.find((c) => c.type === 'Ready');
  parts.push(
    `MtlsEndpoint ${report.namespace}/${report.name}\n` +
      `Ready: ${report.ready}${ready ? ` (${ready.reason}) ${ready.message}` : ''}\n` +
      (report.upToDate ? '' : 'The controller has not yet looked at the latest change of the spec.\n') +
      `Modes: ${report.modes || '-'}    NetworkPolicy: ${report.networkPolicy ?? '-'}\n` +
      `Upstream protocol for HTTP/2 clients: ${report.upstreamProtocol}\n`,
  );
  parts.push(
    'Conditions:\n' +
      (report.conditions.length === 0
        ? '  none yet: is the operator running? (kubectl mtls check)\n'
        : table(
            ['TYPE', 'STATUS', 'REASON', 'SINCE', 'MESSAGE'],
            report.conditions.map((c) => [c.type, c.status, c.reason, relative(c.lastTransitionTime, now), c.message]),
            '  ',
          )),
  );
  parts.push(
    'Certificates:\n' +
      (report.certificates.length === 0
        ? '  none issued yet\n'
        : table(
            ['CERTIFICATE', 'SECRET', 'SERIAL', 'EXPIRES', 'RENEWS'],
            report.certificates.map((c) => [
              c.certificate === 'client' ? `client ${c.client}` : c.certificate,
              c.secretName ?? '-',
              c.serialNumber,
              `${c.notAfter} (${relative(c.notAfter, now)})`,
              `${c.renewalTime} (${relative(c.renewalTime, now)})`,
            ]),
            '  ',
          )),
  );
  const rollover = report.caRollover;
  parts.push(
    rollover
      ? `CA rollover: ${rollover.phase} since ${rollover.startedAt ?? '?'} (new CA ${rollover.newCASerialNumber ?? '?'})\n`
      : 'CA rollover: none in progress\n',
  );
  if (report.renewRequests.length > 0 || report.renewRequestProblems.length > 0) {
    parts.push(
      'Renewals requested:\n' +
        report.renewRequests.map((r) => `  ${r.target} at ${r.requestedAt}\n`).join('') +
        report.renewRequestProblems.map((p) => `  unreadable, ignored: ${p}\n`).join(''),
    );
  }
  const { injected, notInjected, optedOut } = report.pods;
  parts.push(
    `Pods: ${injected.length} injected${list(injected)}\n` +
      (notInjected.length > 0
        ? `  ${notInjected.length} selected but without the sidecar${list(notInjected)} (recreate them once the webhook runs)\n`
        : '') +
      (optedOut.length > 0 ? `  ${optedOut.length} opted out (${INJECT_ANNOTATION}: "false")${list(optedOut)}\n` : ''),
  );
  parts.push(
    `Events (latest ${EVENTS_SHOWN}):\n` +
      (report.events.length === 0
        ? '  none\n'
        : table(
            ['LAST SEEN', 'TYPE', 'REASON', 'COUNT', 'MESSAGE'],
            report.events.map((e) => [relative(e.lastSeen, now), e.type, e.reason, String(e.count), e.message]),
            '  ',
          )),
  );
  if (report.unreadable.length > 0) {
    parts.push(`Not shown, could not be read:\n${report.unreadable.map((u) => `  ${u}\n`).join('')}`);
  }
  return parts.join('\n');
}
