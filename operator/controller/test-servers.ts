import type { V1Secret } from '@kubernetes/client-node';
import { X509Certificate } from 'node:crypto';
import {
  CERTIFICATE_LABEL,
  type KeyAlgorithm,
  managedLabels,
  type MtlsEndpoint,
  testServersSecretName,
} from '../api/types.ts';
import { encodeSecretData, secretText } from '../kube/secret-data.ts';
import { issuedBy } from '../pki/certs.ts';
import { issueCA, issueExpiredServer, issueServer, type PemPair, renewalTime } from '../pki/issue.ts';
import { TEST_SERVER_FILES, WRONG_HOST_NAME } from '../../sidecar/test-listeners.ts';
import { type DesiredSecret, endpointOwnerReference, type Write } from './owned-objects.ts';
import type { Note } from './plan.ts';
import type { ResolvedSpec } from './resolved-spec.ts';

/**
 * The Secret `<endpoint>-test-servers` behind spec.testListeners: the bad certificates the sidecar's test
 * listeners serve. Its content is stable: each part is issued once and only issued again when it is missing
 * or no longer says what it is for (the expired one signed by a CA the endpoint has left, the untrusted or
 * wrong-host one near its end). It holds no key the endpoint's trust depends on: the throwaway CAs' keys are
 * discarded once they have signed.
 */

/** One bad certificate (with its key, but the foreign CA's key is never kept). */
export type TestServerPart = 'expired' | 'untrusted' | 'wrongHost' | 'foreignCa';
export const TEST_SERVER_PARTS: readonly TestServerPart[] = ['expired', 'untrusted', 'wrongHost', 'foreignCa'];

const PART_FILES: Record<TestServerPart, { cert: string; key?: string }> = {
  expired: { cert: TEST_SERVER_FILES.expiredCert, key: TEST_SERVER_FILES.expiredKey },
  untrusted: { cert: TEST_SERVER_FILES.untrustedCert, key: TEST_SERVER_FILES.untrustedKey },
  wrongHost: { cert: TEST_SERVER_FILES.wrongHostCert, key: TEST_SERVER_FILES.wrongHostKey },
  foreignCa: { cert: TEST_SERVER_FILES.foreignCa },
};

/** What the stored Secret holds of one part; undefined when it is missing or unreadable. */
export interface PartFacts {
  notBefore: Date;
  notAfter: Date;
  /** Signed by the endpoint's current CA. */
  signedByEndpointCa: boolean;
  /** Its DNS names (subject alternative names). */
  dnsNames: string[];
}

export interface TestServersInput {
  /** spec.testListeners is not empty. */
  wanted: boolean;
  /** The Secret exists (in the cache). */
  exists: boolean;
  facts: Partial<Record<TestServerPart, PartFacts>>;
  now: Date;
  /** spec.certificates.renewBefore in ms, if set. */
  renewBeforeMs?: number;
  /** The server certificate's names, which the expired and untrusted certificates must carry too. */
  dnsNames: readonly string[];
}

export type TestServersDecision =
  | { action: 'none' }
  | { action: 'delete' }
  | { action: 'write'; issue: { part: TestServerPart; why: string }[]; wakeAt: number[] };

/** Why a part must be issued now, or undefined to keep it. */
export function partIssueReason(part: TestServerPart, facts: PartFacts | undefined, input: TestServersInput) {
  if (!facts) return 'missing';
  const renewAt = renewalTime(facts.notBefore, facts.notAfter, input.renewBeforeMs);
  switch (part) {
    case 'expired':
      if (!facts.signedByEndpointCa) return "not signed by the endpoint's current CA";
      if (facts.notAfter > input.now) return 'not expired';
      return sameNames(facts.dnsNames, input.dnsNames) ? undefined : "the endpoint's names changed";
    case 'wrongHost':
      if (!facts.signedByEndpointCa) return "not signed by the endpoint's current CA";
      return input.now >= renewAt ? 'renewal time reached' : undefined;
    case 'untrusted':
    case 'foreignCa':
      if (facts.signedByEndpointCa) return "signed by the endpoint's CA";
      if (part === 'untrusted' && !sameNames(facts.dnsNames, input.dnsNames)) return "the endpoint's names changed";
      return input.now >= renewAt ? 'renewal time reached' : undefined;
  }
}

/** Any failure of the expired and untrusted listeners must be theirs, not a name mismatch: same names, any order. */
function sameNames(held: readonly string[], wanted: readonly string[]): boolean {
  const set = new Set(held);
  return set.size === new Set(wanted).size && wanted.every((name) => set.has(name));
}

/** What to do with the test-servers Secret, from the facts only. */
export function decideTestServers(input: TestServersInput): TestServersDecision {
  if (!input.wanted) return input.exists ? { action: 'delete' } : { action: 'none' };
  const issue = TEST_SERVER_PARTS.flatMap((part) => {
    const why = partIssueReason(part, input.facts[part], input);
    return why ? [{ part, why }] : [];
  });
  const wakeAt = (['wrongHost', 'untrusted', 'foreignCa'] as const).flatMap((part) => {
    const facts = input.facts[part];
    return facts && !issue.some((i) => i.part === part)
      ? [renewalTime(facts.notBefore, facts.notAfter, input.renewBeforeMs).getTime()]
      : [];
  });
  return { action: 'write', issue, wakeAt };
}

/** The facts of each part of a stored Secret: a certificate and (where it has one) its key, and who signed it. */
export async function inspectTestServers(
  secret: V1Secret | undefined,
  caPem: string,
): Promise<Partial<Record<TestServerPart, PartFacts>>> {
  const facts: Partial<Record<TestServerPart, PartFacts>> = {};
  for (const part of TEST_SERVER_PARTS) {
    const files = PART_FILES[part];
    const certPem = secretText(secret, files.cert);
    if (!certPem || (files.key && !secretText(secret, files.key))) continue;
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(certPem);
    } catch {
      continue;
    }
    facts[part] = {
      notBefore: new Date(cert.validFrom),
      notAfter: new Date(cert.validTo),
      signedByEndpointCa: await issuedBy(certPem, caPem),
      dnsNames: (cert.subjectAltName ?? '')
        .split(', ')
        .filter((entry) => entry.startsWith('DNS:'))
        .map((entry) => entry.slice('DNS:'.length)),
    };
  }
  return facts;
}

/** Issues one part: the bad certificate (and key) it stores, as Secret entries (text). */
async function issuePart(
  part: TestServerPart,
  input: { ca: PemPair; algorithm: KeyAlgorithm; validityMs: number; dnsNames: string[]; now: Date; ep: MtlsEndpoint },
): Promise<Record<string, string>> {
  const { ca, algorithm, validityMs, dnsNames, now } = input;
  const files = PART_FILES[part];
  const endpoint = input.ep.metadata!.name!;
  const namespace = input.ep.metadata!.namespace!;
  const throwawayCa = (purpose: string) =>
    issueCA({
      endpoint,
      namespace,
      algorithm,
      validityMs,
      now,
      subject: `O=${namespace}, OU=${endpoint}, CN=mtls-operator ${purpose}`,
    });
  let pair: PemPair;
  switch (part) {
    case 'expired':
      pair = await issueExpiredServer({ ca, algorithm, dnsNames, now });
      break;
    case 'wrongHost':
      pair = await issueServer({ ca, algorithm, validityMs, now, dnsNames: [WRONG_HOST_NAME] });
      break;
    case 'untrusted':
      pair = await issueServer({ ca: await throwawayCa('untrusted test CA'), algorithm, validityMs, now, dnsNames });
      break;
    case 'foreignCa':
      return { [files.cert]: (await throwawayCa('foreign client CA')).certPem };
  }
  return { [files.cert]: pair.certPem, [files.key!]: pair.keyPem };
}

/**
 * The test-servers Secret as this pass wants it (or its deletion), with the parts it had to issue: gather,
 * decide (`decideTestServers`), issue. The reconciler adds the Secret to the ones it writes.
 */
export async function testServersPlan(input: {
  ep: MtlsEndpoint;
  spec: ResolvedSpec;
  existing: V1Secret | undefined;
  ca: PemPair;
  /** The server certificate's names: the expired and untrusted certificates carry them too. */
  dnsNames: string[];
  now: Date;
}): Promise<{ secrets: DesiredSecret[]; deletions: Write[]; notes: Note[]; wakeAt: number[] }> {
  const { ep, spec, existing, now } = input;
  const name = testServersSecretName(ep.metadata!.name!);
  const decision = decideTestServers({
    wanted: spec.testListeners.length > 0,
    exists: !!existing,
    facts: await inspectTestServers(existing, input.ca.certPem),
    now,
    renewBeforeMs: spec.renewBeforeMs,
    dnsNames: input.dnsNames,
  });
  if (decision.action === 'none') return { secrets: [], deletions: [], notes: [], wakeAt: [] };
  if (decision.action === 'delete') {
    return {
      secrets: [],
      deletions: [{ verb: 'delete', kind: 'Secret', name, uid: existing?.metadata?.uid }],
      notes: [
        {
          type: 'Normal',
          reason: 'TestServersRemoved',
          message: `spec.testListeners is empty: deleted Secret ${name}`,
        },
      ],
      wakeAt: [],
    };
  }
  const kept = Object.fromEntries(
    Object.values(TEST_SERVER_FILES).flatMap((file) => {
      const text = secretText(existing, file);
      return text === undefined ? [] : [[file, text]];
    }),
  );
  const issued = await Promise.all(
    decision.issue.map(({ part }) =>
      issuePart(part, {
        ca: input.ca,
        algorithm: spec.keyAlgorithm,
        validityMs: spec.validityMs,
        dnsNames: input.dnsNames,
        now,
        ep,
      }),
    ),
  );
  const notes: Note[] = decision.issue.length
    ? [
        {
          type: 'Normal',
          reason: 'TestServersIssued',
          message: `Issued the bad certificates of spec.testListeners into Secret ${name}: ${decision.issue
            .map(({ part, why }) => `${part} (${why})`)
            .join(', ')}`,
        },
      ]
    : [];
  const data: Record<string, string> = Object.assign({}, kept, ...issued);
  return {
    secrets: [
      {
        name,
        namespace: ep.metadata!.namespace!,
        type: 'Opaque',
        data: encodeSecretData(data),
        labels: { ...managedLabels(ep.metadata!.name!), [CERTIFICATE_LABEL]: 'test-servers' },
        annotations: {},
        owner: endpointOwnerReference(ep),
      },
    ],
    deletions: [],
    notes,
    wakeAt: decision.wakeAt,
  };
}
