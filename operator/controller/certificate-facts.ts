import type { V1Secret } from '@kubernetes/client-node';
import { secretText } from '../kube/secret-data.ts';
import {
  certInfo,
  identityProblem,
  issuedBy,
  type LeafIdentity,
  pairProblem,
  type ParsedCrl,
  parseCrls,
} from '../pki/certs.ts';
import type { PemPair } from '../pki/issue.ts';
import type { CaInput, HeldCertificate } from './ca-policy.ts';
import { readCaSecret, type CaState, trustedCas } from './ca-state.ts';
import { ISSUANCE_HASH_ANNOTATION, PREVIOUS_SERIALS_ANNOTATION, SECRET_KEYS } from '../api/types.ts';
import { type LeafFacts, parsePreviousSerials } from './leaf-policy.ts';
import { leafIssuedAt } from './renew-request.ts';

/**
 * The gather step's second half: what the Secrets in the snapshot hold, judged (key pairs matched, signatures
 * verified against the endpoint's CAs, identities read). These checks are asynchronous (WebCrypto) and
 * memoized by content in pki/certs.ts; the decisions that follow read only their answers.
 */

const usable = async (pair: PemPair | undefined, now: Date) =>
  !!pair && !(await pairProblem(pair, now, { isCA: true }));

export async function inspectCa(
  secret: V1Secret | undefined,
  base: Pick<CaInput, 'secretName' | 'everIssued' | 'publishedCrls' | 'validityMs' | 'propagationDelayMs' | 'now'>,
  caRenewBeforeMs: number,
): Promise<CaInput> {
  const read = secret ? readCaSecret(secret) : undefined;
  const current = read?.current;
  const currentProblem = current ? await pairProblem(current, base.now, { isCA: true }) : undefined;
  const info = current && !currentProblem ? certInfo(current.certPem, caRenewBeforeMs) : undefined;
  return {
    ...base,
    exists: !!secret,
    read,
    currentProblem,
    nextUsable: await usable(read?.next, base.now),
    previousUsable: await usable(read?.previous, base.now),
    currentRenewalTime: info?.renewalTime,
    currentSerial: info?.serialNumber,
  };
}

/** The serial of the trusted CA that signed `certPem`, if any did. */
export async function signerOf(certPem: string, state: CaState): Promise<string | undefined> {
  for (const ca of trustedCas(state)) {
    if (await issuedBy(certPem, ca.certPem).catch(() => false)) return certInfo(ca.certPem).serialNumber;
  }
  return undefined;
}

export interface InspectedLeaf extends LeafFacts {
  certPem?: string;
  keyPem?: string;
  previousSerials?: string;
}

export async function inspectLeaf(
  secret: V1Secret | undefined,
  leaf: { secretName: string; issuedBefore: boolean; identity: LeafIdentity; renewBeforeMs?: number },
  state: CaState,
  now: Date,
): Promise<InspectedLeaf> {
  const annotations = secret?.metadata?.annotations ?? {};
  const facts: InspectedLeaf = {
    secretName: leaf.secretName,
    exists: !!secret,
    issuedBefore: leaf.issuedBefore,
    onCurrentCa: false,
    storedHash: annotations[ISSUANCE_HASH_ANNOTATION],
    previousSerials: annotations[PREVIOUS_SERIALS_ANNOTATION],
  };
  if (!secret) return facts;
  const certPem = secretText(secret, SECRET_KEYS.tlsCert);
  const keyPem = secretText(secret, SECRET_KEYS.tlsKey);
  if (!certPem || !keyPem) return { ...facts, missingKey: certPem ? SECRET_KEYS.tlsKey : SECRET_KEYS.tlsCert };
  Object.assign(facts, { certPem, keyPem });
  facts.pairProblem = await pairProblem({ certPem, keyPem }, now, { isCA: false });
  if (facts.pairProblem) return facts;
  facts.signerSerial = await signerOf(certPem, state);
  if (!facts.signerSerial) return facts;
  facts.identityProblem = await identityProblem(certPem, leaf.identity);
  if (facts.identityProblem) return facts;
  facts.onCurrentCa = await issuedBy(certPem, state.current.certPem);
  facts.renewalTime = certInfo(certPem, leaf.renewBeforeMs).renewalTime;
  facts.issuedAt = leafIssuedAt(certPem);
  return facts;
}

/** The certificates a removed client's Secret held: its current one and the still-valid ones it replaced. */
export async function heldCertificates(secret: V1Secret, state: CaState): Promise<HeldCertificate[]> {
  const held: HeldCertificate[] = [];
  const certPem = secretText(secret, SECRET_KEYS.tlsCert);
  if (certPem) {
    try {
      const info = certInfo(certPem);
      const ca = await signerOf(certPem, state);
      if (ca) held.push({ serial: info.serialNumber, caSerial: ca, notAfter: info.notAfter.toISOString() });
    } catch {
      // garbage in a Secret about to be deleted: nothing to revoke
    }
  }
  held.push(...parsePreviousSerials(secret.metadata?.annotations?.[PREVIOUS_SERIALS_ANNOTATION]));
  return held;
}

/** The CRLs published in a `ca.crl`, none when it is missing or unreadable. */
export function publishedCrls(secret: V1Secret | undefined): ParsedCrl[] {
  try {
    return parseCrls(secretText(secret, SECRET_KEYS.crl) ?? '');
  } catch {
    return [];
  }
}
