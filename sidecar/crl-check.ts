import { verify, type X509Certificate } from 'node:crypto';

/**
 * Just enough DER to check a CRL against the CAs it is meant for: its issuer, its signature and its
 * nextUpdate. OpenSSL does the real revocation checks during each handshake; this runs once per reload so
 * that a CRL signed by the wrong CA, or a CA without a CRL (both of which make OpenSSL refuse every client
 * of that CA), is reported in words when the files are loaded. A full X.509 library would cost the sidecar
 * ~10 MiB of resident memory for these three fields.
 */

interface Tlv {
  tag: number;
  /** Offset of the first content byte. */
  start: number;
  /** Offset just past the element. */
  end: number;
  /** Offset of the tag byte (the element's raw bytes are der[from, end)). */
  from: number;
}

function readTlv(der: Uint8Array, at: number, limit = der.length): Tlv {
  if (at + 2 > limit) throw new Error('truncated DER');
  const tag = der[at]!;
  let length = der[at + 1]!;
  let start = at + 2;
  if (length & 0x80) {
    const octets = length & 0x7f;
    if (octets === 0 || octets > 4 || start + octets > limit) throw new Error('bad DER length');
    length = 0;
    for (let i = 0; i < octets; i++) length = length * 256 + der[start + i]!;
    start += octets;
  }
  const end = start + length;
  if (end > limit) throw new Error('truncated DER');
  return { tag, start, end, from: at };
}

/** The children of a constructed element. */
function children(der: Uint8Array, parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  for (let at = parent.start; at < parent.end;) {
    const child = readTlv(der, at, parent.end);
    out.push(child);
    at = child.end;
  }
  return out;
}

const SEQUENCE = 0x30;
const OID = 0x06;
const BIT_STRING = 0x03;
const INTEGER = 0x02;
const UTC_TIME = 0x17;
const GENERALIZED_TIME = 0x18;

function oidText(der: Uint8Array, tlv: Tlv): string {
  const parts: number[] = [];
  let value = 0;
  for (let i = tlv.start; i < tlv.end; i++) {
    value = value * 128 + (der[i]! & 0x7f);
    if (!(der[i]! & 0x80)) {
      if (parts.length === 0) parts.push(value < 80 ? Math.floor(value / 40) : 2, value < 80 ? value % 40 : value - 80);
      else parts.push(value);
      value = 0;
    }
  }
  return parts.join('.');
}

function timeOf(der: Uint8Array, tlv: Tlv): Date {
  const text = Buffer.from(der.subarray(tlv.start, tlv.end)).toString('latin1');
  const m = /^(\d{2}|\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(text);
  if (!m) throw new Error(`unreadable time "${text}"`);
  let year = Number(m[1]);
  if (tlv.tag === UTC_TIME) year += year < 50 ? 2000 : 1900;
  return new Date(Date.UTC(year, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])));
}

/** Signature algorithms by OID -> the digest `crypto.verify` needs (RSA PKCS#1 v1.5 and ECDSA). */
const DIGESTS: Record<string, string> = {
  '1.2.840.113549.1.1.11': 'sha256',
  '1.2.840.113549.1.1.12': 'sha384',
  '1.2.840.113549.1.1.13': 'sha512',
  '1.2.840.10045.4.3.2': 'sha256',
  '1.2.840.10045.4.3.3': 'sha384',
  '1.2.840.10045.4.3.4': 'sha512',
};

export interface CrlFacts {
  /** The issuer Name, as DER (compared byte for byte with a CA's subject). */
  issuer: Buffer;
  nextUpdate?: Date;
  /** Signed bytes, signature algorithm and signature, for `signedBy`. */
  tbs: Buffer;
  algorithm: string;
  signature: Buffer;
}

/** Reads a DER CRL (RFC 5280 5.1). Throws on anything that is not one. */
export function readCrl(der: Uint8Array): CrlFacts {
  const top = readTlv(der, 0);
  if (top.tag !== SEQUENCE || top.end !== der.length) throw new Error('not a DER SEQUENCE');
  const [tbs, algorithm, signature] = children(der, top);
  if (tbs?.tag !== SEQUENCE || algorithm?.tag !== SEQUENCE || signature?.tag !== BIT_STRING)
    throw new Error('not a CertificateList');
  const fields = children(der, tbs);
  let i = fields[0]?.tag === INTEGER ? 1 : 0; // optional version
  i++; // signature AlgorithmIdentifier
  const issuer = fields[i++];
  const thisUpdate = fields[i++];
  if (issuer?.tag !== SEQUENCE || (thisUpdate?.tag !== UTC_TIME && thisUpdate?.tag !== GENERALIZED_TIME))
    throw new Error('not a TBSCertList');
  const next = fields[i];
  const nextUpdate = next && (next.tag === UTC_TIME || next.tag === GENERALIZED_TIME) ? timeOf(der, next) : undefined;
  const algorithmOid = children(der, algorithm)[0];
  if (algorithmOid?.tag !== OID) throw new Error('no signature algorithm');
  return {
    issuer: Buffer.from(der.subarray(issuer.from, issuer.end)),
    nextUpdate,
    tbs: Buffer.from(der.subarray(tbs.from, tbs.end)),
    algorithm: oidText(der, algorithmOid),
    // The BIT STRING's first content byte is the count of unused bits (0 for signatures).
    signature: Buffer.from(der.subarray(signature.start + 1, signature.end)),
  };
}

/** The subject Name of a certificate, as DER. */
export function subjectDer(cert: X509Certificate): Buffer {
  const der = cert.raw;
  const tbs = children(der, readTlv(der, 0))[0]!;
  const fields = children(der, tbs);
  const i = fields[0]?.tag === 0xa0 ? 1 : 0; // [0] EXPLICIT version
  // serialNumber, signature, issuer, validity, subject
  const subject = fields[i + 4];
  if (subject?.tag !== SEQUENCE) throw new Error('certificate without a subject');
  return Buffer.from(der.subarray(subject.from, subject.end));
}

/**
 * Whether `ca` issued and signed the CRL: same Name, and a signature its key verifies. A signature algorithm
 * this check does not know is left to OpenSSL (true when the Names match).
 */
export function signedBy(crl: CrlFacts, ca: X509Certificate): boolean {
  if (!subjectDer(ca).equals(crl.issuer)) return false;
  const digest = DIGESTS[crl.algorithm];
  if (!digest) return true;
  try {
    return verify(digest, crl.tbs, ca.publicKey, crl.signature);
  } catch {
    return false;
  }
}
