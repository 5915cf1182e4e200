import {
  certificateToPem,
  generateKeyPair,
  importKeyPairPem,
  issueCertificate,
  type KeyAlgorithm,
  parseCertificates,
  privateKeyToPem,
  signingAlgorithm,
  x509,
} from '../pki/x509.ts';
import type { PemPair } from './ca-state.ts';

/** What the controller needs to know of a certificate it manages. */
export interface CertInfo {
  serialNumber: string;
  notBefore: Date;
  notAfter: Date;
  renewalTime: Date;
}

/** Renewal at notAfter - renewBefore; by default one third of the lifetime before expiry (cert-manager). */
export function renewalTime(notBefore: Date, notAfter: Date, renewBeforeMs?: number): Date {
  const lifetime = notAfter.getTime() - notBefore.getTime();
  const before = renewBeforeMs && renewBeforeMs < lifetime ? renewBeforeMs : lifetime / 3;
  return new Date(notAfter.getTime() - before);
}

export function certInfo(certPem: string, renewBeforeMs?: number): CertInfo {
  const [cert] = parseCertificates(certPem);
  if (!cert) throw new Error('no PEM certificate found');
  return {
    serialNumber: cert.serialNumber.toLowerCase(),
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
    renewalTime: renewalTime(cert.notBefore, cert.notAfter, renewBeforeMs),
  };
}

/** Why a certificate/key pair cannot be used as it is, or undefined if it can. Never echoes key material. */
export async function pairProblem(pair: PemPair, now: Date, expect: { isCA: boolean }): Promise<string | undefined> {
  let cert: x509.X509Certificate;
  try {
    const certs = parseCertificates(pair.certPem);
    if (certs.length === 0) return 'the certificate is not PEM';
    cert = certs[0]!;
  } catch (err) {
    return `the certificate does not parse (${(err as Error).message})`;
  }
  let keys: CryptoKeyPair;
  try {
    keys = (await importKeyPairPem(pair.keyPem)).keys;
  } catch {
    return 'the private key does not parse';
  }
  const certSpki = Buffer.from(cert.publicKey.rawData);
  const keySpki = Buffer.from(await crypto.subtle.exportKey('spki', keys.publicKey));
  if (!certSpki.equals(keySpki)) return 'the private key does not match the certificate';
  const basic = cert.getExtension(x509.BasicConstraintsExtension);
  if (expect.isCA !== !!basic?.ca) return expect.isCA ? 'the certificate is not a CA' : 'the certificate is a CA';
  if (now >= cert.notAfter) return `the certificate expired at ${cert.notAfter.toISOString()}`;
  return undefined;
}

/** True if `certPem` was signed by the CA in `caPem`. */
export async function issuedBy(certPem: string, caPem: string): Promise<boolean> {
  try {
    const [cert] = parseCertificates(certPem);
    const [ca] = parseCertificates(caPem);
    if (!cert || !ca || cert.issuer !== ca.subject) return false;
    return await cert.verify({ publicKey: await ca.publicKey.export(), signatureOnly: true });
  } catch {
    return false;
  }
}

interface IssueOptions {
  algorithm: KeyAlgorithm;
  validityMs: number;
  now: Date;
}

/** A small backdating absorbs clock skew between the operator and the peers that verify. */
const BACKDATE_MS = 60_000;

async function issue(
  subject: string,
  opts: IssueOptions,
  ca: PemPair | undefined,
  extra: Partial<Parameters<typeof issueCertificate>[0]>,
): Promise<PemPair> {
  const keys = await generateKeyPair(opts.algorithm);
  const notBefore = new Date(opts.now.getTime() - BACKDATE_MS);
  let notAfter = new Date(opts.now.getTime() + opts.validityMs);
  let issuer: Parameters<typeof issueCertificate>[1] = { selfSigned: keys.privateKey };
  if (ca) {
    const [caCert] = parseCertificates(ca.certPem);
    const caKey = (await importKeyPairPem(ca.keyPem)).keys.privateKey;
    // A leaf never outlives its CA; the CA rolls over long before that matters.
    if (caCert!.notAfter < notAfter) notAfter = caCert!.notAfter;
    issuer = { certificate: caCert!, privateKey: caKey };
  }
  const cert = await issueCertificate({ subject, publicKey: keys.publicKey, notBefore, notAfter, ...extra }, issuer);
  return { certPem: certificateToPem(cert), keyPem: await privateKeyToPem(keys.privateKey) };
}

export function issueCa(opts: IssueOptions & { endpoint: string; namespace: string }): Promise<PemPair> {
  // The issue time in the name keeps two CAs of one endpoint (during a rollover) apart for CRL matching.
  const stamp = opts.now.toISOString().replace(/[-:]|\.\d+/g, '');
  return issue(`CN=${opts.endpoint}.${opts.namespace} mtls-operator CA ${stamp}, O=mtls-operator`, opts, undefined, {
    isCA: true,
  });
}

export function issueServerCert(
  opts: IssueOptions & { ca: PemPair; dnsNames: string[]; ipAddresses?: string[] },
): Promise<PemPair> {
  return issue(`CN=${opts.dnsNames[0] ?? opts.ipAddresses?.[0] ?? 'mtls-endpoint'}`, opts, opts.ca, {
    serverAuth: true,
    dnsNames: opts.dnsNames,
    ipAddresses: opts.ipAddresses,
  });
}

/** DNS names and IP addresses in a certificate's subjectAltName. */
export function subjectAltNames(certPem: string): string[] {
  const [cert] = parseCertificates(certPem);
  const san = cert?.getExtension(x509.SubjectAlternativeNameExtension);
  return (san?.names.items ?? []).filter((n) => n.type === 'dns' || n.type === 'ip').map((n) => n.value);
}

export function clientSpiffeId(trustDomain: string, namespace: string, endpoint: string, client: string): string {
  return `spiffe://${trustDomain}/ns/${namespace}/mtlsendpoint/${endpoint}/client/${client}`;
}

export function issueClientCert(
  opts: IssueOptions & { ca: PemPair; client: string; spiffeId: string },
): Promise<PemPair> {
  return issue(`CN=${opts.client}`, opts, opts.ca, { clientAuth: true, uris: [opts.spiffeId] });
}

/** A CRL signed by `ca` listing `serials` (hex); valid for `validityMs`. */
export async function issueCrl(
  ca: PemPair,
  revoked: { serial: string; revokedAt: Date }[],
  now: Date,
  validityMs: number,
): Promise<string> {
  const [caCert] = parseCertificates(ca.certPem);
  const caKey = (await importKeyPairPem(ca.keyPem)).keys.privateKey;
  const crl = await x509.X509CrlGenerator.create({
    issuer: caCert!.subject,
    thisUpdate: new Date(now.getTime() - BACKDATE_MS),
    nextUpdate: new Date(now.getTime() + validityMs),
    entries: revoked.map((entry) => ({ serialNumber: entry.serial, revocationDate: entry.revokedAt })),
    signingKey: caKey,
    signingAlgorithm: signingAlgorithm(caKey),
    extensions: [await x509.AuthorityKeyIdentifierExtension.create(caCert!)],
  });
  // OpenSSL (and so Node's tls and nginx) reads the 'X509 CRL' label; @peculiar/x509 writes 'CRL'.
  return x509.PemConverter.encode(crl.rawData, 'X509 CRL') + '\n';
}

export interface ParsedCrl {
  issuer: string;
  serials: Set<string>;
  nextUpdate?: Date;
  pem: string;
}

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
