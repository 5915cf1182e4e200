import { createHash } from 'node:crypto';
import type { RolloverPhase } from './ca-state.ts';
import type { HeldCertificate } from './ca-policy.ts';
import type { Note } from './plan.ts';
import { renewDecision } from './renew-request.ts';
import type { LeafIdentity } from '../pki/certs.ts';

/**
 * Whether a leaf (the server certificate or one client's) must be issued, as a chain of small checks in the
 * style of cert-manager's certificate policies: the first that finds a reason wins, and the reason becomes the
 * Event. Each check reads only the facts gathered about the leaf's Secret.
 */

/** What was found in a leaf Secret. Later facts are only gathered when the earlier ones hold. */
export interface LeafFacts {
  secretName: string;
  exists: boolean;
  /** The endpoint's status already reported this leaf: a missing Secret was deleted, not never made. */
  issuedBefore: boolean;
  missingKey?: 'tls.crt' | 'tls.key';
  pairProblem?: string;
  /** Serial of the trusted CA that signed the certificate; undefined when none did. */
  signerSerial?: string;
  identityProblem?: string;
  onCurrentCa: boolean;
  storedHash?: string;
  renewalTime?: Date;
  /** When the certificate was issued (notBefore plus the backdating), for renewals asked for through the API. */
  issuedAt?: Date;
}

export interface LeafContext {
  /** The issuance hash of what the spec asks for now (names, key algorithm, lifetimes). */
  wantedHash: string;
  phase?: RolloverPhase;
  now: Date;
  /** Which leaf this is, and the endpoint's `mtls.operator.dev/renew-requested` annotation. */
  identity?: LeafIdentity;
  renewRequests?: string;
}

/** Why a leaf is issued; `keepOld`: the replaced certificate is still valid and must be remembered for revocation. */
export interface IssueReason extends Note {
  keepOld: boolean;
}

type LeafCheck = (facts: LeafFacts, context: LeafContext) => IssueReason | undefined;

const repair = (message: string): IssueReason => ({ type: 'Warning', reason: 'Repaired', message, keepOld: false });
const reissue = (reason: string, message: string): IssueReason => ({ type: 'Normal', reason, message, keepOld: true });

export const secretDeleted: LeafCheck = (f) =>
  !f.exists && f.issuedBefore ? repair(`Secret ${f.secretName} was deleted`) : undefined;

export const secretAbsent: LeafCheck = (f) =>
  !f.exists ? { type: 'Normal', reason: 'Issued', message: 'New certificate', keepOld: false } : undefined;

export const keyOrCertMissing: LeafCheck = (f) =>
  f.missingKey ? repair(`Secret ${f.secretName} had no ${f.missingKey}`) : undefined;

export const pairUnusable: LeafCheck = (f) =>
  f.pairProblem ? repair(`Secret ${f.secretName}: ${f.pairProblem}`) : undefined;

export const notSignedByEndpointCa: LeafCheck = (f) =>
  !f.signerSerial ? repair(`Secret ${f.secretName} held a certificate not signed by this endpoint's CA`) : undefined;

export const wrongIdentity: LeafCheck = (f) =>
  f.identityProblem ? repair(`Secret ${f.secretName}: ${f.identityProblem}`) : undefined;

/** A user asked for this leaf (or all) to be re-issued after it was issued: `kubectl mtls renew`. */
export const renewRequested: LeafCheck = (f, c) => {
  if (!f.issuedAt || !c.identity) return undefined;
  const decision = renewDecision(c.renewRequests, c.identity, f.issuedAt, c.now);
  return decision.due ? reissue('RenewedOnRequest', decision.message) : undefined;
};

/** A renewal asked for at a time still to come (a client's clock ahead): when to look again. */
export function renewRequestWake(f: LeafFacts, c: LeafContext): number | undefined {
  if (!f.issuedAt || !c.identity) return undefined;
  const decision = renewDecision(c.renewRequests, c.identity, f.issuedAt, c.now);
  return decision.due ? undefined : decision.wakeAt?.getTime();
}

/** Signed by a CA that no longer signs; during Propagating the current CA still signs, so nothing moves yet. */
export const signedByReplacedCa: LeafCheck = (f, c) =>
  !f.onCurrentCa && c.phase !== 'Propagating' ? reissue('Reissued', 'CA rollover') : undefined;

export const specChanged: LeafCheck = (f, c) =>
  f.storedHash !== c.wantedHash
    ? reissue('Reissued', 'The spec changed (names, key algorithm or lifetime)')
    : undefined;

export const renewalDue: LeafCheck = (f, c) =>
  f.renewalTime && c.now >= f.renewalTime
    ? reissue('Renewed', `Renewal time ${f.renewalTime.toISOString()} reached`)
    : undefined;

export const LEAF_CHECKS: readonly LeafCheck[] = [
  secretDeleted,
  secretAbsent,
  keyOrCertMissing,
  pairUnusable,
  notSignedByEndpointCa,
  wrongIdentity,
  renewRequested,
  signedByReplacedCa,
  specChanged,
  renewalDue,
];

/** Why the leaf must be issued now, or undefined if its Secret holds a certificate to keep. */
export function leafIssuanceReason(facts: LeafFacts, context: LeafContext): IssueReason | undefined {
  for (const check of LEAF_CHECKS) {
    const reason = check(facts, context);
    if (reason) return reason;
  }
  return undefined;
}

/** A digest of what a leaf was issued for: when the spec asks for something else, the leaf is re-issued. */
export function issuanceHash(parts: readonly (string | number)[]): string {
  return createHash('sha256').update(parts.join('\n')).digest('hex').slice(0, 16);
}

/** The annotation listing the still-valid certificates a client Secret held before: `serial:caSerial:notAfter,...`. */
export function parsePreviousSerials(list: string | undefined): HeldCertificate[] {
  return (list ?? '')
    .split(',')
    .filter(Boolean)
    .map((item) => {
      const [serial, caSerial, ...rest] = item.split(':');
      return { serial: serial ?? '', caSerial: caSerial ?? '', notAfter: rest.join(':') };
    })
    .filter((entry) => entry.serial && entry.caSerial && !Number.isNaN(Date.parse(entry.notAfter)));
}

/** The list after a replacement: expired entries dropped, the replaced certificate appended, the last 20 kept. */
export function withReplaced(
  list: string | undefined,
  replaced: HeldCertificate | undefined,
  now: Date,
): string | undefined {
  const entries = parsePreviousSerials(list).filter((entry) => new Date(entry.notAfter) > now);
  if (replaced) entries.push(replaced);
  return entries.length
    ? entries
        .slice(-20)
        .map((e) => `${e.serial}:${e.caSerial}:${e.notAfter}`)
        .join(',')
    : undefined;
}
