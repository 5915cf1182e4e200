import { type RenewTarget, targetKey } from '../api/renew-request.ts';
import type { MtlsEndpoint } from '../api/types.ts';
import { table } from './output.ts';

export interface RenewedCertificate {
  certificate: string;
  previousSerial?: string;
  serialNumber?: string;
}

export interface RenewReport {
  namespace: string;
  endpoint: string;
  target: string;
  requestedAt: string;
  requestedBy: string;
  /** Whether the command waited for the controller; when it did, whether every certificate was re-issued. */
  waited: boolean;
  done: boolean;
  certificates: RenewedCertificate[];
}

/** Which target the flags name; refuses a client the endpoint does not have (nothing would be renewed). */
export function renewTarget(ep: MtlsEndpoint, flags: { client?: string; server: boolean }): RenewTarget {
  if (flags.client !== undefined && flags.server) throw new Error('--client and --server exclude each other');
  if (flags.server) return { kind: 'server' };
  if (flags.client === undefined) return { kind: 'all' };
  const clients = (ep.spec.clients ?? []).map((c) => c.name);
  if (!clients.includes(flags.client)) {
    throw new Error(
      `MtlsEndpoint ${ep.metadata?.namespace}/${ep.metadata?.name} has no client "${flags.client}" in spec.clients (it has: ${clients.join(', ') || 'none'})`,
    );
  }
  return { kind: 'client', client: flags.client };
}

/** The serials of the certificates a target covers, as the endpoint's status names them. */
export function targetSerials(ep: MtlsEndpoint, target: RenewTarget): Map<string, string | undefined> {
  const serials = new Map<string, string | undefined>();
  if (target.kind !== 'client') serials.set('server', ep.status?.server?.serialNumber);
  const clients =
    target.kind === 'client'
      ? [target.client]
      : target.kind === 'all'
        ? (ep.spec.clients ?? []).map((c) => c.name)
        : [];
  for (const client of clients) {
    serials.set(`client ${client}`, ep.status?.clients?.find((c) => c.name === client)?.serialNumber);
  }
  return serials;
}

/** Has every certificate of the target a serial other than the one it had before the request? */
export function renewedCertificates(
  before: Map<string, string | undefined>,
  after: Map<string, string | undefined>,
): { done: boolean; certificates: RenewedCertificate[] } {
  const certificates = [...before].map(([certificate, previousSerial]) => ({
    certificate,
    ...(previousSerial ? { previousSerial } : {}),
    ...(after.get(certificate) ? { serialNumber: after.get(certificate) } : {}),
  }));
  const done = certificates.every((c) => c.serialNumber && c.serialNumber !== c.previousSerial);
  return { done, certificates };
}

export const describeTarget = (target: RenewTarget) =>
  target.kind === 'all' ? 'every certificate (server and clients)' : targetKey(target).replace('/', ' ');

export function renewTable(report: RenewReport): string {
  const head = `Renewal requested (target ${report.target}) for MtlsEndpoint ${report.namespace}/${report.endpoint} at ${report.requestedAt} by ${report.requestedBy}.\n`;
  if (!report.waited)
    return head + 'Not waiting: kubectl mtls status shows the new serials once the controller has issued them.\n';
  return (
    head +
    (report.done ? 'Re-issued:\n' : 'Not all re-issued yet (is the operator running? kubectl mtls check):\n') +
    table(
      ['CERTIFICATE', 'PREVIOUS SERIAL', 'NEW SERIAL'],
      report.certificates.map((c) => [
        c.certificate,
        c.previousSerial ?? '-',
        c.serialNumber && c.serialNumber !== c.previousSerial ? c.serialNumber : 'pending',
      ]),
      '  ',
    )
  );
}
