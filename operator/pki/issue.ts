import { DEFAULT_TRUST_DOMAIN, renewBeforeMs } from '../api/defaults.ts';
import type { KeyAlgorithm } from '../api/types.ts';
import { parseCertificate, parsePrivateKey, PkiError, validateKeyPair } from './inspect.ts';
import {
  certificateToPem,
  generateKeyPair,
  importKeyPairPem,
  issueCertificate,
  privateKeyToPem,
  x509,
} from './x509.ts';

/**
 * Issuing the certificates of one MtlsEndpoint (docs/DESIGN.md contract 2). Pure: no Kubernetes, no clock — the
 * caller passes `now`, so a test (or the controller's clock) decides every date.
 *
 * Choices:
 * - notBefore is `now` minus one minute (BACKDATE_MS), so a peer whose clock is a little behind the operator's
 *   does not see a brand-new certificate as "not yet valid"; a leaf's notBefore never precedes its CA's.
 *   notAfter is `now + validity`. (cert-manager does not backdate; a sidecar started by a renewal a second
 *   later on a node a second behind would.)
 * - A leaf's notAfter never exceeds its CA's; when it would, it is cut to the CA's notAfter and the result
 *   says `clampedToCA`, the controller's cue that the CA must roll over.
 * - CA subject: `O=<namespace>, OU=<endpoint>, CN=mtls-operator CA <issue time>`. The time keeps two CAs of
 *   one endpoint (old and new during a rollover) apart by name, which CRL lookup by issuer relies on; the
 *   namespace and endpoint are separate attributes because X.509 caps each at 64 characters.
 * - Server subject: `CN=<first DNS name>` (when it fits in 64 characters), SANs = the DNS names given,
 *   serverAuth only. Client subject `CN=<client>`, clientAuth only, URI SAN = the SPIFFE ID.
 * - Serials: 128 random bits, positive (x509.ts randomSerial).
 */
export const BACKDATE_MS = 60_000;

/** A certificate and its private key, PEM. `ca.crt`/`ca.key` or `tls.crt`/`tls.key` of a Secret. */
export interface PemPair {
  certPem: string;
  keyPem: string;
}

export interface IssuedCertificate extends PemPair {
  /** Lower-case hex. */
  serial: string;
  notBefore: Date;
  notAfter: Date;
  /** True when notAfter was cut to the CA's notAfter (the leaf got less than the validity asked for). */
  clampedToCA: boolean;
}

interface Common {
  algorithm: KeyAlgorithm;
  validityMs: number;
  now: Date;
}

function checkCommon(opts: Common): void {
  if (!(opts.now instanceof Date) || Number.isNaN(opts.now.getTime())) throw new PkiError('now is not a valid date');
  if (!(opts.validityMs > 0)) throw new PkiError(`validity must be positive, not ${opts.validityMs} ms`);
}

/** The subject of an endpoint's CA issued at `now`. */
export function caSubject(endpoint: string, namespace: string, now: Date): string {
  const stamp = now.toISOString().replace(/[-:]/g, ''); // 20261122T190500.123Z
  return `O=${namespace}, OU=${endpoint}, CN=mtls-operator CA ${stamp}`;
}

/** The URI SAN of a client certificate. */
export function clientSpiffeId(trustDomain: string, namespace: string, endpoint: string, client: string): string {
  return `spiffe://${trustDomain}/ns/${namespace}/mtlsendpoint/${endpoint}/client/${client}`;
}

async function finish(
  cert: x509.X509Certificate,
  privateKey: CryptoKey,
  clampedToCA: boolean,
): Promise<IssuedCertificate> {
  return {
    certPem: certificateToPem(cert),
    keyPem: await privateKeyToPem(privateKey),
    serial: cert.serialNumber.toLowerCase(),
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
    clampedToCA,
  };
}

/**
 * A self-signed CA for one endpoint: basicConstraints CA with pathLen 0, keyCertSign and cRLSign. `subject`
 * overrides the endpoint CA's subject (the throwaway CAs of spec.testListeners).
 */
export async function issueCA(
  opts: Common & { endpoint: string; namespace: string; subject?: string },
): Promise<IssuedCertificate> {
  checkCommon(opts);
  const keys = await generateKeyPair(opts.algorithm);
  const cert = await issueCertificate(
    {
      subject: opts.subject ?? caSubject(opts.endpoint, opts.namespace, opts.now),
      publicKey: keys.publicKey,
      notBefore: new Date(opts.now.getTime() - BACKDATE_MS),
      notAfter: new Date(opts.now.getTime() + opts.validityMs),
      isCA: true,
    },
    { selfSigned: keys.privateKey },
  );
  return finish(cert, keys.privateKey, false);
}

/** The CA of a PEM pair, checked: it parses, is a CA, and the key is its key. Throws a PkiError. */
async function loadCA(ca: PemPair): Promise<{ certificate: x509.X509Certificate; privateKey: CryptoKey }> {
  let certificate: x509.X509Certificate;
  try {
    certificate = parseCertificate(ca.certPem);
  } catch (err) {
    throw new PkiError(`the CA certificate: ${(err as Error).message}`);
  }
  if (!certificate.getExtension(x509.BasicConstraintsExtension)?.ca) {
    throw new PkiError('the CA certificate is not a CA');
  }
  try {
    parsePrivateKey(ca.keyPem);
  } catch (err) {
    throw new PkiError(`the CA key: ${(err as Error).message}`);
  }
  const pair = validateKeyPair(ca.certPem, ca.keyPem);
  if (!pair.ok) throw new PkiError(`the CA key: ${pair.reason}`);
  return { certificate, privateKey: (await importKeyPairPem(ca.keyPem)).keys.privateKey };
}

/**
 * A leaf signed by `opts.ca`: valid from `now` (backdated a little) for `validityMs`, cut at the CA's notAfter;
 * or, with `window`, exactly the dates given, whatever the CA's (a test certificate meant to be out of date).
 */
async function issueLeaf(
  opts: Common & { ca: PemPair },
  req: Omit<Parameters<typeof issueCertificate>[0], 'publicKey' | 'notBefore' | 'notAfter'>,
  window?: { notBefore: Date; notAfter: Date },
): Promise<IssuedCertificate> {
  checkCommon(opts);
  const issuer = await loadCA(opts.ca);
  let dates = window;
  let clampedToCA = false;
  if (!dates) {
    const caNotBefore = issuer.certificate.notBefore.getTime();
    const caNotAfter = issuer.certificate.notAfter.getTime();
    if (opts.now.getTime() >= caNotAfter) {
      throw new PkiError(`the CA expired at ${issuer.certificate.notAfter.toISOString()}`);
    }
    const notBefore = Math.max(opts.now.getTime() - BACKDATE_MS, caNotBefore);
    let notAfter = opts.now.getTime() + opts.validityMs;
    clampedToCA = notAfter > caNotAfter;
    if (clampedToCA) notAfter = caNotAfter;
    dates = { notBefore: new Date(notBefore), notAfter: new Date(notAfter) };
  }
  const keys = await generateKeyPair(opts.algorithm);
  const cert = await issueCertificate({ ...req, publicKey: keys.publicKey, ...dates }, issuer);
  return finish(cert, keys.privateKey, clampedToCA);
}

/** A server certificate's CN: its first DNS name that fits (64 characters, no wildcard), else its first IP. */
function serverCommonName(dnsNames: readonly string[], ipAddresses: readonly string[], fallback: string): string {
  return dnsNames.find((name) => name.length <= 64 && !name.startsWith('*.')) ?? ipAddresses[0] ?? fallback;
}

/**
 * A server certificate signed by `ca` that expired a day before `now` (spec.testListeners ExpiredCertificate):
 * valid from two days to one day ago, whatever the CA's own dates (clients check each certificate's).
 */
export async function issueExpiredServer(
  opts: Omit<Common, 'validityMs'> & { ca: PemPair; dnsNames: string[] },
): Promise<IssuedCertificate> {
  const day = 24 * 3600_000;
  const dnsNames = [...new Set(opts.dnsNames)];
  const cn = serverCommonName(dnsNames, [], 'mtls-operator expired test server');
  return issueLeaf(
    { ...opts, validityMs: day },
    { subject: `CN=${cn}`, serverAuth: true, dnsNames },
    { notBefore: new Date(opts.now.getTime() - 2 * day), notAfter: new Date(opts.now.getTime() - day) },
  );
}

/** A server certificate: serverAuth only, SANs = `dnsNames` and `ipAddresses` (at least one name). */
export async function issueServer(
  opts: Common & { ca: PemPair; dnsNames: string[]; ipAddresses?: string[] },
): Promise<IssuedCertificate> {
  const dnsNames = [...new Set(opts.dnsNames)];
  const ipAddresses = [...new Set(opts.ipAddresses ?? [])];
  if (dnsNames.length + ipAddresses.length === 0)
    throw new PkiError('a server certificate needs at least one DNS name or IP address');
  const cn = serverCommonName(dnsNames, ipAddresses, 'mtls-operator server');
  return issueLeaf(opts, { subject: `CN=${cn}`, serverAuth: true, dnsNames, ipAddresses });
}

/** A client certificate: CN = the client's name, clientAuth only, URI SAN = its SPIFFE ID. */
export async function issueClient(
  opts: Common & { ca: PemPair; endpoint: string; namespace: string; client: string; trustDomain?: string },
): Promise<IssuedCertificate> {
  if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(opts.client) || opts.client.length > 63) {
    throw new PkiError(`"${opts.client}" is not a client name (a DNS label)`);
  }
  const uri = clientSpiffeId(opts.trustDomain ?? DEFAULT_TRUST_DOMAIN, opts.namespace, opts.endpoint, opts.client);
  return issueLeaf(opts, { subject: `CN=${opts.client}`, clientAuth: true, uris: [uri] });
}

/**
 * When a certificate valid from `notBefore` to `notAfter` is renewed: `renewBeforeMs` before notAfter, or,
 * when that is unset (or not shorter than the lifetime), one third of the lifetime before (operator/api/defaults.ts).
 */
export function renewalTime(notBefore: Date, notAfter: Date, renewBefore?: number): Date {
  const lifetime = notAfter.getTime() - notBefore.getTime();
  return new Date(notAfter.getTime() - renewBeforeMs(lifetime, renewBefore));
}
