import { inspectCertificate, parseCertificate, validateKeyPair, verifyIssuedBy } from '../pki/inspect.ts';
import { renewalTime } from '../pki/issue.ts';
import { x509 } from '../pki/x509.ts';
import type { PemPair } from './ca-state.ts';

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

export function certInfo(certPem: string, renewBeforeMs?: number): CertInfo {
  const cert = parseCertificate(certPem);
  return {
    serialNumber: cert.serialNumber.toLowerCase(),
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
    renewalTime: renewalTime(cert.notBefore, cert.notAfter, renewBeforeMs),
  };
}

/** Why a certificate/key pair cannot be used as it is, or undefined if it can. Never echoes key material. */
export async function pairProblem(pair: PemPair, now: Date, expect: { isCA: boolean }): Promise<string | undefined> {
  const check = validateKeyPair(pair.certPem, pair.keyPem);
  if (!check.ok) return check.reason;
  const info = await inspectCertificate(pair.certPem);
  if (expect.isCA !== info.isCA) return expect.isCA ? 'the certificate is not a CA' : 'the certificate is a CA';
  if (now >= info.notAfter) return `the certificate expired at ${info.notAfter.toISOString()}`;
  return undefined;
}

/** True if `certPem` was signed by the CA in `caPem`. */
export async function issuedBy(certPem: string, caPem: string): Promise<boolean> {
  return (await verifyIssuedBy(certPem, caPem)).ok;
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
