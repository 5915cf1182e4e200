import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import type { KeyAlgorithm } from '../api/types.ts';
import { keyAlgorithmOfPem, x509 } from './x509.ts';

/**
 * Reading what is in a Secret: certificates, keys and whether they belong together. Every failure is a
 * `PkiError` (or a `Check` with a reason) in words that can go into an Event or a condition message: they
 * name what is wrong, never echo the PEM (a private key must not reach a log).
 */
export class PkiError extends Error {
  override name = 'PkiError';
}

export type Check = { ok: true } | { ok: false; reason: string };

export interface CertificateInfo {
  /** Lower-case hex, as DER-encoded (no sign padding beyond what the certificate holds). */
  serial: string;
  notBefore: Date;
  notAfter: Date;
  /** RFC 4514-style, e.g. `CN=billing`. */
  subject: string;
  issuer: string;
  /** SHA-256 of the DER certificate, lower-case hex. */
  fingerprintSha256: string;
  /** Subject key identifier, lower-case hex. */
  subjectKeyId?: string;
  /** Authority key identifier: the issuer's subject key identifier, lower-case hex. */
  authorityKeyId?: string;
  dnsNames: string[];
  ipAddresses: string[];
  uris: string[];
  isCA: boolean;
  /** Extended key usages by name: `serverAuth`, `clientAuth` (others as OIDs). */
  extendedKeyUsages: string[];
  keyAlgorithm?: KeyAlgorithm;
}

const CERT_BLOCK = /-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g;

/** Every certificate of a PEM text, none when it holds no certificate; throws a PkiError on a damaged one. */
export function parseCertificates(pem: string): x509.X509Certificate[] {
  return pem.includes('-----BEGIN CERTIFICATE-----') ? parseCertificateBundle(pem) : [];
}

/** Every certificate of a PEM bundle, parsed; throws a PkiError that says what is wrong. */
export function parseCertificateBundle(pem: string): x509.X509Certificate[] {
  if (typeof pem !== 'string' || pem.trim() === '') throw new PkiError('the certificate is empty');
  const blocks = [...pem.matchAll(CERT_BLOCK)];
  const begins = pem.split('-----BEGIN CERTIFICATE-----').length - 1;
  if (blocks.length === 0) {
    throw new PkiError(
      begins > 0 ? 'the certificate PEM is truncated (no END CERTIFICATE line)' : 'no PEM certificate found',
    );
  }
  if (begins > blocks.length) throw new PkiError('the certificate PEM is truncated (no END CERTIFICATE line)');
  return blocks.map((block, i) => {
    const body = block[1]!.replace(/\s+/g, '');
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(body)) {
      throw new PkiError(`certificate ${i + 1} of the PEM is not base64`);
    }
    try {
      return new x509.X509Certificate(Buffer.from(body, 'base64'));
    } catch (err) {
      throw new PkiError(`certificate ${i + 1} of the PEM is not a valid X.509 certificate (${shortReason(err)})`);
    }
  });
}

/** The first certificate of a PEM (a leaf's Secret holds one). */
export function parseCertificate(pem: string): x509.X509Certificate {
  return parseCertificateBundle(pem)[0]!;
}

function shortReason(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return message.split('\n')[0]!.slice(0, 200);
}

const hex = (data: ArrayBuffer | Uint8Array) => Buffer.from(data as ArrayBuffer).toString('hex');

const EKU_NAMES: Record<string, string> = {
  [x509.ExtendedKeyUsage.serverAuth]: 'serverAuth',
  [x509.ExtendedKeyUsage.clientAuth]: 'clientAuth',
  [x509.ExtendedKeyUsage.codeSigning]: 'codeSigning',
  [x509.ExtendedKeyUsage.emailProtection]: 'emailProtection',
  [x509.ExtendedKeyUsage.timeStamping]: 'timeStamping',
  [x509.ExtendedKeyUsage.ocspSigning]: 'ocspSigning',
};

/** What the controller needs to know of a certificate (the first one of `pem`). Throws a PkiError on garbage. */
export async function inspectCertificate(pem: string): Promise<CertificateInfo> {
  const cert = parseCertificate(pem);
  return describe(cert);
}

async function describe(cert: x509.X509Certificate): Promise<CertificateInfo> {
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  const names = san?.names.toJSON() ?? [];
  const basic = cert.getExtension(x509.BasicConstraintsExtension);
  const ski = cert.getExtension(x509.SubjectKeyIdentifierExtension);
  const aki = cert.getExtension(x509.AuthorityKeyIdentifierExtension);
  const eku = cert.getExtension(x509.ExtendedKeyUsageExtension);
  const spki = createPublicKey({ key: Buffer.from(cert.publicKey.rawData), format: 'der', type: 'spki' });
  const keyAlgorithm = algorithmOfKey(spki);
  return {
    serial: cert.serialNumber.toLowerCase(),
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
    subject: cert.subject,
    issuer: cert.issuer,
    fingerprintSha256: hex(await cert.getThumbprint('SHA-256')),
    subjectKeyId: ski?.keyId.toLowerCase(),
    authorityKeyId: aki?.keyId?.toLowerCase(),
    dnsNames: names.filter((n) => n.type === 'dns').map((n) => n.value),
    ipAddresses: names.filter((n) => n.type === 'ip').map((n) => n.value),
    uris: names.filter((n) => n.type === 'url').map((n) => n.value),
    isCA: !!basic?.ca,
    extendedKeyUsages: (eku?.usages ?? []).map((u) => EKU_NAMES[String(u)] ?? String(u)),
    keyAlgorithm,
  };
}

function algorithmOfKey(key: KeyObject): KeyAlgorithm | undefined {
  const details = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === 'ec') {
    return details.namedCurve === 'prime256v1'
      ? 'ECDSA-P256'
      : details.namedCurve === 'secp384r1'
        ? 'ECDSA-P384'
        : undefined;
  }
  if (key.asymmetricKeyType === 'rsa') {
    const name = `RSA-${details.modulusLength}`;
    return ['RSA-2048', 'RSA-3072', 'RSA-4096'].includes(name) ? (name as KeyAlgorithm) : undefined;
  }
  return undefined;
}

/** Parses a PEM private key; throws a PkiError that never contains the key. */
export function parsePrivateKey(pem: string): KeyObject {
  if (typeof pem !== 'string' || pem.trim() === '') throw new PkiError('the private key is empty');
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pem)) throw new PkiError('no PEM private key found');
  if (!/-----END [A-Z ]*PRIVATE KEY-----/.test(pem)) {
    throw new PkiError('the private key PEM is truncated (no END PRIVATE KEY line)');
  }
  if (/ENCRYPTED PRIVATE KEY|Proc-Type: 4,ENCRYPTED/.test(pem)) throw new PkiError('the private key is encrypted');
  try {
    return createPrivateKey(pem);
  } catch {
    // Node's message can quote the input in some versions; keep ours.
    throw new PkiError('the private key PEM does not parse (damaged or truncated)');
  }
}

/** Does `keyPem` hold the private key of the certificate in `certPem`? Used to detect tampered Secrets. */
export function validateKeyPair(certPem: string, keyPem: string): Check {
  let cert: x509.X509Certificate;
  let key: KeyObject;
  try {
    cert = parseCertificate(certPem);
    key = parsePrivateKey(keyPem);
  } catch (err) {
    return { ok: false, reason: (err as Error).message };
  }
  if (!keyAlgorithmOfPem(keyPem))
    return { ok: false, reason: 'the private key is of a type the operator does not issue' };
  const fromKey = createPublicKey(key).export({ type: 'spki', format: 'der' });
  if (!fromKey.equals(Buffer.from(cert.publicKey.rawData))) {
    return { ok: false, reason: 'the private key does not match the certificate' };
  }
  return { ok: true };
}

/**
 * Was the certificate in `certPem` signed by the CA in `caPem`? Checks that the CA is a CA, that the issuer
 * name and key identifier match it, and the signature. Validity periods are not checked here.
 */
export async function verifyIssuedBy(certPem: string, caPem: string): Promise<Check> {
  let cert: x509.X509Certificate;
  let ca: x509.X509Certificate;
  try {
    cert = parseCertificate(certPem);
  } catch (err) {
    return { ok: false, reason: (err as Error).message };
  }
  try {
    ca = parseCertificate(caPem);
  } catch (err) {
    return { ok: false, reason: `the CA: ${(err as Error).message}` };
  }
  if (!ca.getExtension(x509.BasicConstraintsExtension)?.ca) return { ok: false, reason: 'the issuer is not a CA' };
  if (!Buffer.from(cert.issuerName.toArrayBuffer()).equals(Buffer.from(ca.subjectName.toArrayBuffer()))) {
    return { ok: false, reason: `the certificate's issuer "${cert.issuer}" is not the CA "${ca.subject}"` };
  }
  const aki = cert.getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId;
  const ski = ca.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId;
  if (aki && ski && aki.toLowerCase() !== ski.toLowerCase()) {
    return { ok: false, reason: 'the certificate was issued by another key of the same name (key identifiers differ)' };
  }
  let valid = false;
  try {
    valid = await cert.verify({ publicKey: ca, signatureOnly: true });
  } catch (err) {
    return { ok: false, reason: `the signature cannot be checked (${shortReason(err)})` };
  }
  return valid ? { ok: true } : { ok: false, reason: 'the signature does not verify with the CA key' };
}
