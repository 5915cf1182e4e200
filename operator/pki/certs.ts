import { createHash } from 'node:crypto';
import {
  inspectCertificate,
  parseCertificate,
  parseCertificateBundle,
  validateKeyPair,
  verifyIssuedBy,
} from './inspect.ts';
import { BACKDATE_MS, renewalTime } from './issue.ts';
import { x509 } from './x509.ts';
import type { PemPair } from './issue.ts';

/**
 * What the controller asks of the certificates it manages, on top of operator/pki (which issues and
 * inspects them): a quick synchronous summary, "can this pair still be used, and if not why", "who signed
 * it", and the CRLs already published.
 */
export interface CertInfo {
  serialNumber: string;
  notBefore: Date;
  notAfter: Date;
  renewalTime: Date;
}

/**
 * Every reconcile looks at every certificate again (that is what level-triggered means), but a given PEM
 * always parses, matches its key and verifies against a CA the same way. These answers are remembered by
 * content digest, so a resync of 1,000 endpoints does not redo thousands of signature checks. Bounded: the
 * memo is dropped when it grows past MEMO_LIMIT entries.
 */
const MEMO_LIMIT = 50_000;
const memo = new Map<string, unknown>();

function remembered<T>(kind: string, parts: string[], compute: () => T): T {
  const hash = createHash('sha256').update(kind);
  for (const part of parts) hash.update('\0').update(part);
  const key = hash.digest('base64');
  if (memo.has(key)) return memo.get(key) as T;
  if (memo.size >= MEMO_LIMIT) memo.clear();
  const value = compute();
  memo.set(key, value);
  return value;
}

export function certInfo(certPem: string, renewBeforeMs?: number): CertInfo {
  const parsed = remembered('parse', [certPem], () => {
    const cert = parseCertificate(certPem);
    return { serialNumber: cert.serialNumber.toLowerCase(), notBefore: cert.notBefore, notAfter: cert.notAfter };
  });
  // The lifetime counts from issue, not from the backdated notBefore: with the default renewBefore (a third of
  // the lifetime) a leaf of validity v is due at issue + 2v/3. Counting the minute of backdating made every
  // certificate shorter-lived than 30s due at once, so the controller re-issued it in a hot loop.
  const issuedAt = new Date(Math.min(parsed.notBefore.getTime() + BACKDATE_MS, parsed.notAfter.getTime()));
  return { ...parsed, renewalTime: renewalTime(issuedAt, parsed.notAfter, renewBeforeMs) };
}

/** Why a certificate/key pair cannot be used as it is, or undefined if it can. Never echoes key material. */
export async function pairProblem(pair: PemPair, now: Date, expect: { isCA: boolean }): Promise<string | undefined> {
  const facts = await remembered('pair', [pair.certPem, pair.keyPem], async () => {
    const check = validateKeyPair(pair.certPem, pair.keyPem);
    if (!check.ok) return { problem: check.reason };
    const info = await inspectCertificate(pair.certPem);
    return { isCA: info.isCA, notAfter: info.notAfter };
  });
  if ('problem' in facts) return facts.problem;
  if (expect.isCA !== facts.isCA) return expect.isCA ? 'the certificate is not a CA' : 'the certificate is a CA';
  if (now >= facts.notAfter) return `the certificate expired at ${facts.notAfter.toISOString()}`;
  return undefined;
}

/** What a leaf Secret must hold: the server certificate, or the certificate of this one client. */
export type LeafIdentity = { kind: 'server' } | { kind: 'client'; client: string; spiffeId: string };

/**
 * Why a valid leaf of this endpoint is still not the certificate this Secret must hold (another client's
 * certificate, a client certificate in the server Secret...), or undefined. Names and purposes only, never keys.
 */
export async function identityProblem(certPem: string, want: LeafIdentity): Promise<string | undefined> {
  const facts = await remembered('identity', [certPem], async () => {
    const info = await inspectCertificate(certPem);
    return { subject: info.subject, uris: info.uris, ekus: info.extendedKeyUsages };
  });
  const serverAuth = facts.ekus.includes('serverAuth');
  const clientAuth = facts.ekus.includes('clientAuth');
  const held = [facts.subject || 'no subject', ...facts.uris].join(', ');
  if (want.kind === 'server') {
    return serverAuth && !clientAuth ? undefined : `the certificate is not a server certificate (it is ${held})`;
  }
  const right =
    facts.subject === `CN=${want.client}` && facts.uris.includes(want.spiffeId) && clientAuth && !serverAuth;
  return right ? undefined : `the certificate is not client ${want.client}'s (it is ${held})`;
}

/** Why a leaf Secret's `ca.crt` is not a trust bundle holding the endpoint's signing CA, or undefined. */
export function bundleProblem(bundlePem: string | undefined, caPem: string): string | undefined {
  if (!bundlePem) return 'ca.crt was missing';
  return remembered('bundle', [bundlePem, caPem], () => {
    let bundle: x509.X509Certificate[];
    try {
      bundle = parseCertificateBundle(bundlePem);
    } catch (err) {
      return `ca.crt is not a trust bundle (${(err as Error).message})`;
    }
    const ca = Buffer.from(parseCertificate(caPem).rawData);
    return bundle.some((cert) => Buffer.from(cert.rawData).equals(ca))
      ? undefined
      : "ca.crt did not hold the endpoint's CA";
  });
}

/** True if `certPem` was signed by the CA in `caPem`. */
export function issuedBy(certPem: string, caPem: string): Promise<boolean> {
  return remembered('issued-by', [certPem, caPem], async () => (await verifyIssuedBy(certPem, caPem)).ok);
}

export async function subjectAltNames(certPem: string): Promise<string[]> {
  const info = await inspectCertificate(certPem);
  return [...info.dnsNames, ...info.ipAddresses];
}

export interface ParsedCrl {
  issuer: string;
  serials: Set<string>;
  nextUpdate?: Date;
  pem: string;
}

/** The CRLs in a `ca.crl` bundle (one per trusted CA). */
export function parseCrls(pem: string): ParsedCrl[] {
  const blocks = pem.match(/-----BEGIN (X509 )?CRL-----[\s\S]*?-----END (X509 )?CRL-----/g) ?? [];
  return blocks.map((block) => {
    const crl = new x509.X509Crl(block);
    return {
      issuer: crl.issuer,
      serials: new Set(crl.entries.map((entry) => entry.serialNumber.toLowerCase())),
      nextUpdate: crl.nextUpdate,
      pem: block,
    };
  });
}
