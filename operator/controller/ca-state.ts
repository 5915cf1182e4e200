import type { V1Secret } from '@kubernetes/client-node';
import { SECRET_KEYS } from '../api/types.ts';
import { encodeSecretData, secretText as text } from '../kube/secret-data.ts';
import type { PemPair } from '../pki/issue.ts';

/**
 * The endpoint CA Secret (`<endpoint>-ca`) as the controller sees it. Besides the contract keys
 * `ca.crt`/`ca.key` (the CA that signs now) it holds, during a rollover, the CA that comes next or the one
 * being retired, and the revocation ledger. Everything about a rollover lives in this one Secret, so a
 * restarted controller picks up exactly where the previous one stopped.
 */
export const CA_KEYS = {
  cert: SECRET_KEYS.caCert,
  key: SECRET_KEYS.caKey,
  nextCert: 'next-ca.crt',
  nextKey: 'next-ca.key',
  previousCert: 'previous-ca.crt',
  previousKey: 'previous-ca.key',
  revoked: 'revoked.json',
} as const;

export const ROLLOVER_PHASE_ANNOTATION = 'mtls.operator.dev/ca-rollover-phase';
export const ROLLOVER_SINCE_ANNOTATION = 'mtls.operator.dev/ca-rollover-since';

/** Propagating: the next CA is in every trust bundle, nothing is signed by it yet. Retiring: leaves are
 * signed by the new CA; the old one stays trusted until the new leaves have propagated. */
export type RolloverPhase = 'Propagating' | 'Retiring';

export type { PemPair };

export interface RevokedEntry {
  serial: string;
  client: string;
  /** Serial of the CA that signed the revoked certificate: its CRL lists it. */
  caSerial: string;
  revokedAt: string;
  /** After this the entry can leave the CRL: an expired certificate is refused anyway. */
  notAfter: string;
}

export interface CaState {
  current: PemPair;
  next?: PemPair;
  previous?: PemPair;
  phase?: RolloverPhase;
  phaseSince?: Date;
  revoked: RevokedEntry[];
}

function pair(secret: V1Secret, certKey: string, keyKey: string): PemPair | undefined {
  const certPem = text(secret, certKey);
  const keyPem = text(secret, keyKey);
  return certPem && keyPem ? { certPem, keyPem } : undefined;
}

/** Reads the CA Secret; `current` is undefined when its contract keys are missing. The ledger survives. */
export function readCaSecret(secret: V1Secret): Partial<CaState> & { revoked: RevokedEntry[]; ledgerProblem?: string } {
  let revoked: RevokedEntry[] = [];
  let ledgerProblem: string | undefined;
  const ledger = text(secret, CA_KEYS.revoked);
  if (ledger) {
    try {
      const parsed = JSON.parse(ledger) as unknown;
      if (!Array.isArray(parsed)) throw new Error('not a list');
      revoked = parsed.filter(
        (entry): entry is RevokedEntry => typeof entry?.serial === 'string' && typeof entry?.caSerial === 'string',
      );
    } catch (err) {
      ledgerProblem = `${CA_KEYS.revoked} is not a JSON list of revocations (${(err as Error).message})`;
    }
  }
  const annotations = secret.metadata?.annotations ?? {};
  const phase = annotations[ROLLOVER_PHASE_ANNOTATION];
  const since = annotations[ROLLOVER_SINCE_ANNOTATION];
  return {
    current: pair(secret, CA_KEYS.cert, CA_KEYS.key),
    next: pair(secret, CA_KEYS.nextCert, CA_KEYS.nextKey),
    previous: pair(secret, CA_KEYS.previousCert, CA_KEYS.previousKey),
    phase: phase === 'Propagating' || phase === 'Retiring' ? phase : undefined,
    phaseSince: since && !Number.isNaN(Date.parse(since)) ? new Date(since) : undefined,
    revoked,
    ledgerProblem,
  };
}

/** The data and annotations a CA Secret must hold for this state. */
export function caSecretContent(state: CaState): { data: Record<string, string>; annotations: Record<string, string> } {
  const values: Record<string, string> = {
    [CA_KEYS.cert]: state.current.certPem,
    [CA_KEYS.key]: state.current.keyPem,
    [CA_KEYS.revoked]: JSON.stringify(state.revoked),
  };
  if (state.next) {
    values[CA_KEYS.nextCert] = state.next.certPem;
    values[CA_KEYS.nextKey] = state.next.keyPem;
  }
  if (state.previous) {
    values[CA_KEYS.previousCert] = state.previous.certPem;
    values[CA_KEYS.previousKey] = state.previous.keyPem;
  }
  const data = encodeSecretData(values);
  const annotations: Record<string, string> = {};
  if (state.phase && state.phaseSince) {
    annotations[ROLLOVER_PHASE_ANNOTATION] = state.phase;
    annotations[ROLLOVER_SINCE_ANNOTATION] = state.phaseSince.toISOString();
  }
  return { data, annotations };
}

/** Every CA a peer must trust right now: the signing one, plus the next or the retiring one in a rollover. */
export function trustedCas(state: CaState): PemPair[] {
  return [state.current, state.next, state.previous].filter((ca): ca is PemPair => !!ca);
}

export function trustBundle(state: CaState): string {
  return trustedCas(state)
    .map((ca) => ca.certPem.trim() + '\n')
    .join('');
}
