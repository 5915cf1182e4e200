import type { PemPair } from '../pki/issue.ts';
import type { ParsedCrl } from '../pki/certs.ts';
import type { RevokedEntry } from './ca-state.ts';

export const CRL_VALIDITY_MS = 7 * 24 * 3_600_000;

export interface TrustedCa {
  pair: PemPair;
  serial: string;
  subject: string;
}

/** One CRL of the bundle: the published one kept as it is, or a new one to sign with these entries. */
export type CrlPart = { keep: string } | { sign: { ca: PemPair; revoked: { serial: string; revokedAt: Date }[] } };

/**
 * One CRL per trusted CA, re-signed only when its list changes or a third of its validity is left; entries
 * leave the list once the certificate they revoke has expired (an expired certificate is refused anyway).
 */
export function planCrls(
  cas: readonly TrustedCa[],
  revoked: readonly RevokedEntry[],
  published: readonly ParsedCrl[],
  now: Date,
): { parts: CrlPart[]; wakeAt: number[] } {
  const live = revoked.filter((entry) => new Date(entry.notAfter) > now);
  const parts: CrlPart[] = [];
  const wakeAt: number[] = [];
  for (const ca of cas) {
    const mine = live.filter((entry) => entry.caSerial === ca.serial);
    const have = published.find((crl) => crl.issuer === ca.subject);
    const fresh = have?.nextUpdate && have.nextUpdate.getTime() - now.getTime() > CRL_VALIDITY_MS / 3;
    if (have?.nextUpdate && fresh && sameSet(have.serials, new Set(mine.map((entry) => entry.serial)))) {
      parts.push({ keep: have.pem.trim() + '\n' });
      wakeAt.push(have.nextUpdate.getTime() - CRL_VALIDITY_MS / 3);
      continue;
    }
    parts.push({
      sign: {
        ca: ca.pair,
        revoked: mine.map((entry) => ({ serial: entry.serial, revokedAt: new Date(entry.revokedAt) })),
      },
    });
    wakeAt.push(now.getTime() + (CRL_VALIDITY_MS * 2) / 3);
  }
  return { parts, wakeAt };
}

function sameSet(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  return a.size === b.size && [...a].every((x) => b.has(x));
}
