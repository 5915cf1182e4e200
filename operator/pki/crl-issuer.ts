import { parseCertificate, PkiError, validateKeyPair } from './inspect.ts';
import { BACKDATE_MS, type PemPair } from './issue.ts';
import { importKeyPairPem, signingAlgorithm, x509 } from './x509.ts';

/** The CRL of an endpoint CA (`ca.crl` of the server Secret). Reading CRLs is the sidecar's business. */

const CRL_NUMBER_OID = '2.5.29.20';

export interface Revocation {
  /** Hex serial of the revoked certificate (as inspectCertificate reports it). */
  serial: string;
  revokedAt: Date;
  /** Why; default cessationOfOperation (the client was removed from the spec). */
  reason?: RevocationReason;
}

/** The reasons the operator has to revoke (RFC 5280 reasonCode; "unspecified" is expressed by no reason). */
export type RevocationReason = 'cessationOfOperation' | 'superseded' | 'keyCompromise' | 'affiliationChanged';

/** DER INTEGER of a non-negative bigint (minimal, with a 0x00 pad when the top bit is set). */
function derInteger(value: bigint): ArrayBuffer {
  if (value < 0n) throw new PkiError('a CRL number cannot be negative');
  let hex = value.toString(16);
  if (hex.length % 2) hex = '0' + hex;
  let bytes = Buffer.from(hex, 'hex');
  if (bytes[0]! & 0x80) bytes = Buffer.concat([Buffer.from([0]), bytes]);
  if (bytes.length > 20) throw new PkiError('a CRL number has at most 20 octets');
  return new Uint8Array([0x02, bytes.length, ...bytes]).buffer;
}

/**
 * A CRL signed by `ca` listing `revoked` (an empty list is a valid CRL: nothing revoked). thisUpdate is `now`
 * backdated like certificates; nextUpdate is `now + nextUpdateMs`. The CRL number defaults to `now` in
 * milliseconds, which grows with every CRL the controller writes as long as its clock does; pass one to override.
 * Carries the CA's authority key identifier, so a verifier picks the right CA during a rollover.
 */
export async function issueCRL(opts: {
  ca: PemPair;
  revoked: readonly Revocation[];
  now: Date;
  nextUpdateMs: number;
  crlNumber?: bigint;
}): Promise<string> {
  if (!(opts.nextUpdateMs > 0)) throw new PkiError(`nextUpdate must be in the future, not ${opts.nextUpdateMs} ms`);
  let caCert: x509.X509Certificate;
  try {
    caCert = parseCertificate(opts.ca.certPem);
  } catch (err) {
    throw new PkiError(`the CA certificate: ${(err as Error).message}`);
  }
  const pair = validateKeyPair(opts.ca.certPem, opts.ca.keyPem);
  if (!pair.ok) throw new PkiError(`the CA key: ${pair.reason}`);
  const caKey = (await importKeyPairPem(opts.ca.keyPem)).keys.privateKey;
  const entries = opts.revoked.map((entry) => {
    const serial = entry.serial.toLowerCase().replace(/^0x/, '');
    if (!/^[0-9a-f]+$/.test(serial)) throw new PkiError(`"${entry.serial}" is not a hex serial number`);
    // Always a reason: @peculiar/x509 2.2 writes an entry without extensions as an empty SEQUENCE, which
    // RFC 5280 does not allow (SIZE 1..MAX); OpenSSL tolerates it, stricter parsers need not.
    return {
      serialNumber: serial,
      revocationDate: entry.revokedAt,
      reason: x509.X509CrlReason[entry.reason ?? 'cessationOfOperation'],
    };
  });
  const crl = await x509.X509CrlGenerator.create({
    issuer: caCert.subjectName,
    thisUpdate: new Date(opts.now.getTime() - BACKDATE_MS),
    nextUpdate: new Date(opts.now.getTime() + opts.nextUpdateMs),
    entries,
    signingKey: caKey,
    signingAlgorithm: signingAlgorithm(caKey),
    extensions: [
      await x509.AuthorityKeyIdentifierExtension.create(caCert),
      new x509.Extension(CRL_NUMBER_OID, false, derInteger(opts.crlNumber ?? BigInt(opts.now.getTime()))),
    ],
  });
  // @peculiar/x509 labels it "BEGIN CRL"; OpenSSL and Node read only RFC 7468's "BEGIN X509 CRL".
  return x509.PemConverter.encode(crl.rawData, 'X509 CRL') + '\n';
}
