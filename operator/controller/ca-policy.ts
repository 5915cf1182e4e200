import type { PemPair } from '../pki/issue.ts';
import type { ParsedCrl } from '../pki/certs.ts';
import type { CaState, readCaSecret, RevokedEntry, RolloverPhase } from './ca-state.ts';
import type { Note } from './plan.ts';

/**
 * The endpoint CA as a state machine, decided without I/O. A rollover goes
 *   (no phase) --renewal time--> Propagating --propagation delay--> Retiring --delay, leaves moved, old client
 *   certificates expired--> (no phase)
 * Propagating: the next CA is in every trust bundle and signs nothing yet. Retiring: the new CA signs; the old
 * one stays in the bundles until nothing still valid depends on it.
 */

/** What the CA Secret holds, judged: `currentProblem` is why its signing pair cannot be used. */
export interface CaInput {
  secretName: string;
  /** The CA Secret exists. */
  exists: boolean;
  read?: ReturnType<typeof readCaSecret>;
  currentProblem?: string;
  nextUsable: boolean;
  previousUsable: boolean;
  /** The endpoint's status already reported a CA: a missing Secret was deleted, not never made. */
  everIssued: boolean;
  /** When the signing CA is due for renewal (only read when it is usable). */
  currentRenewalTime?: Date;
  /** The CRLs published in the server Secret, from which a damaged revocation ledger is rebuilt. */
  publishedCrls: readonly ParsedCrl[];
  currentSerial?: string;
  validityMs: number;
  propagationDelayMs: number;
  now: Date;
}

/** The CA state this pass moves to; `issue` names the CA that must be generated to complete it. */
export interface CaPlan {
  issue?: 'current' | 'next';
  state: Omit<CaState, 'current'> & { current?: PemPair };
  notes: Note[];
}

export function decideCa(input: CaInput): CaPlan {
  const { read, now } = input;
  const problem = read?.current ? input.currentProblem : 'ca.crt or ca.key is missing';
  if (!input.exists || !read?.current || problem) {
    const first = !input.exists && !input.everIssued;
    const note: Note = first
      ? { type: 'Normal', reason: 'CAIssued', message: `Issued the endpoint CA into Secret ${input.secretName}` }
      : {
          type: 'Warning',
          reason: 'CARepaired',
          message: `Secret ${input.secretName}: ${input.exists ? problem : 'was deleted'}; issued a new CA, every certificate is re-issued under it`,
        };
    return { issue: 'current', state: { revoked: read?.revoked ?? [] }, notes: [note] };
  }
  const notes: Note[] = [];
  let revoked = read.revoked;
  if (read.ledgerProblem) {
    notes.push({
      type: 'Warning',
      reason: 'CARepaired',
      message: `Secret ${input.secretName}: ${read.ledgerProblem}; rebuilt it from the CRL`,
    });
    revoked = revokedFromCrls(input.publishedCrls, input.currentSerial ?? '', now, input.validityMs);
  }
  const state: CaPlan['state'] = {
    current: read.current,
    next: input.nextUsable ? read.next : undefined,
    previous: input.previousUsable ? read.previous : undefined,
    phase: read.phase,
    phaseSince: read.phaseSince,
    revoked,
  };
  const step = rolloverStep(state, input);
  notes.push(...step.notes);
  return { issue: step.issue, state: withoutOrphanPhase(step.state, step.issue), notes };
}

/** Starts a rollover at the CA's renewal time; promotes the new CA once it has propagated. */
function rolloverStep(
  state: CaPlan['state'],
  input: CaInput,
): { state: CaPlan['state']; issue?: 'next'; notes: Note[] } {
  const { now } = input;
  const propagated = !!state.phaseSince && now.getTime() >= state.phaseSince.getTime() + input.propagationDelayMs;
  if (!state.phase && input.currentRenewalTime && now >= input.currentRenewalTime) {
    return {
      state: { ...state, next: undefined, phase: 'Propagating', phaseSince: now },
      issue: 'next',
      notes: [
        {
          type: 'Normal',
          reason: 'CARolloverStarted',
          message: `The CA is due for renewal: a new CA joins every trust bundle now and starts signing in ${input.propagationDelayMs / 1000}s`,
        },
      ],
    };
  }
  if (state.phase === 'Propagating' && propagated && state.next) {
    return {
      state: {
        ...state,
        previous: state.current,
        current: state.next,
        next: undefined,
        phase: 'Retiring',
        phaseSince: now,
      },
      notes: [
        {
          type: 'Normal',
          reason: 'CARolledOver',
          message: 'The new CA now signs; every certificate is re-issued under it',
        },
      ],
    };
  }
  return { state, notes: [] };
}

/** A phase whose CA is gone (a hand-edited Secret) falls back to no rollover. */
function withoutOrphanPhase(state: CaPlan['state'], issue: 'next' | undefined): CaPlan['state'] {
  const orphan =
    (state.phase === 'Propagating' && !state.next && issue !== 'next') ||
    (state.phase === 'Retiring' && !state.previous);
  const phase = orphan ? undefined : state.phase;
  return phase ? state : { ...state, phase: undefined, phaseSince: undefined, next: undefined, previous: undefined };
}

/** A revocation ledger rebuilt from the published CRLs, every entry kept for one more leaf lifetime. */
export function revokedFromCrls(
  crls: readonly ParsedCrl[],
  caSerial: string,
  now: Date,
  validityMs: number,
): RevokedEntry[] {
  return crls.flatMap((crl) =>
    [...crl.serials].map((serial) => ({
      serial,
      client: '',
      caSerial,
      revokedAt: now.toISOString(),
      notAfter: new Date(now.getTime() + validityMs).toISOString(),
    })),
  );
}

/** The CA renews at two thirds of its life, and always early enough for one full leaf lifetime after it. */
export function caRenewBeforeMs(
  spec: { caValidityMs: number; validityMs: number },
  propagationDelayMs: number,
): number {
  return Math.max(spec.caValidityMs / 3, Math.min(spec.validityMs + 2 * propagationDelayMs, spec.caValidityMs / 2));
}

/** A client certificate replaced at a renewal or re-issue but still valid: its holder may present it. */
export interface HeldCertificate {
  serial: string;
  caSerial: string;
  notAfter: string;
}

export interface RetirementInput {
  phase?: RolloverPhase;
  phaseSince?: Date;
  previousSerial?: string;
  revoked: readonly RevokedEntry[];
  replacedClientCerts: readonly HeldCertificate[];
  /** Leaves this pass keeps that are still signed by the retiring CA. */
  leavesOnOldCa: number;
  propagationDelayMs: number;
  now: Date;
}

/**
 * Drops the old CA from the bundles once every leaf is signed by the new one and has had time to spread, and
 * once every client certificate the old CA signed has expired: a replaced client certificate that was not
 * revoked is still a valid credential of this endpoint (docs/DESIGN.md's mode table), and a client that has not
 * re-read its Secret yet presents it. (Leaves never outlive their CA, so this ends by the old CA's expiry.)
 */
export function decideRetirement(input: RetirementInput): { retire: boolean; wakeAt?: number; note?: Note } {
  if (input.phase !== 'Retiring' || !input.phaseSince) return { retire: false };
  const propagated = input.now.getTime() >= input.phaseSince.getTime() + input.propagationDelayMs;
  if (!propagated || input.leavesOnOldCa > 0) return { retire: false };
  const revoked = new Set(input.revoked.map((entry) => entry.serial));
  const lastHeld = Math.max(
    0,
    ...input.replacedClientCerts
      .filter((held) => held.caSerial === input.previousSerial && !revoked.has(held.serial))
      .map((held) => Date.parse(held.notAfter)),
  );
  if (lastHeld > input.now.getTime()) return { retire: false, wakeAt: lastHeld };
  return {
    retire: true,
    note: {
      type: 'Normal',
      reason: 'CARolloverComplete',
      message: 'The old CA left every trust bundle; the rollover is complete',
    },
  };
}
