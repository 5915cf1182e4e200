import { parseRenewRequests, rfc3339 } from '../api/renew-request.ts';
import { RENEW_REQUESTED_ANNOTATION } from '../api/types.ts';
import { certInfo, type LeafIdentity } from '../pki/certs.ts';
import { BACKDATE_MS } from '../pki/issue.ts';

export type RenewDecision =
  | { due: false; /** A request whose time has not come yet (a client clock ahead): look again then. */ wakeAt?: Date }
  | { due: true; requestedAt: Date; message: string };

/**
 * Must a leaf be re-issued because a user asked (`kubectl mtls renew`, the `mtls.operator.dev/renew-requested`
 * annotation)? Yes when an entry naming this leaf (or `all`) is later than the leaf's issue time and has come.
 * Level-triggered: the re-issued leaf's issue time is at or after the request, so the request is honoured
 * once however often the endpoint is reconciled, and a leaf issued after the request for another reason (a
 * new client, a repair) is not issued twice. A request in the future waits for it instead of re-issuing in a
 * loop until the clocks agree. Times compare to the second, the precision of a certificate's notBefore.
 */
export function renewDecision(
  annotation: string | undefined,
  leaf: LeafIdentity,
  issuedAt: Date,
  now: Date,
): RenewDecision {
  const own = leaf.kind === 'server' ? 'server' : `client/${leaf.client}`;
  const seconds = (d: Date) => Math.floor(d.getTime() / 1000);
  const pending = parseRenewRequests(annotation)
    .entries.filter(
      (entry) => (entry.target === own || entry.target === 'all') && seconds(entry.at) > seconds(issuedAt),
    )
    .sort((a, b) => a.at.getTime() - b.at.getTime());
  const come = pending.filter((entry) => seconds(entry.at) <= seconds(now));
  const latest = come[come.length - 1];
  if (latest) {
    return {
      due: true,
      requestedAt: latest.at,
      message: `Renewal of ${latest.target} requested at ${rfc3339(latest.at)} (annotation ${RENEW_REQUESTED_ANNOTATION})`,
    };
  }
  return pending[0] ? { due: false, wakeAt: new Date(seconds(pending[0].at) * 1000) } : { due: false };
}

/** When a leaf was issued: its notBefore plus the minute of backdating (operator/pki/issue.ts). */
export function leafIssuedAt(certPem: string): Date {
  const { notBefore, notAfter } = certInfo(certPem);
  return new Date(Math.min(notBefore.getTime() + BACKDATE_MS, notAfter.getTime()));
}
