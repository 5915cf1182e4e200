import * as asn1js from 'asn1js';
import { createCipheriv, createHash, createHmac, randomBytes, webcrypto } from 'node:crypto';
import * as pkijs from 'pkijs';
import type { Pkcs12Profile } from '../api/types.ts';
import { parseCertificates } from './inspect.ts';

/**
 * PKCS#12 keystores and truststores for Java (and anything else that reads PKCS#12), built with pkijs.
 *
 * Profiles (PKCS12_PROFILES in operator/api/types.ts; names as cert-manager's `spec.keystores.pkcs12.profile`):
 * - Modern2023 (default): keys and certificates encrypted with PBES2 (PBKDF2 with HMAC-SHA-256, AES-256-CBC),
 *   MAC HMAC-SHA-256. Read by Java 8u301+, 11.0.12+, 17+, OpenSSL 1.1.1+ and 3.x.
 * - LegacyDES: pbeWithSHAAnd3-KeyTripleDES-CBC for keys and certificates, MAC HMAC-SHA-1: for older Java (8
 *   before 8u301, 11 before 11.0.12) and other tools that do not know PBES2. OpenSSL 3 reads it without its
 *   legacy provider. cert-manager's LegacyRC2 (40-bit RC2 for certificates) is not offered: RC2-40 protects
 *   nothing, and OpenSSL 3 needs `-legacy` to read it.
 */
interface ProfileSettings {
  /** Iterations of PBKDF2 / the PKCS#12 KDF for encryption, and of the PKCS#12 KDF for the MAC. */
  iterations: number;
  macHash: 'SHA-256' | 'SHA-1';
}

const PROFILES: Record<Pkcs12Profile, ProfileSettings> = {
  // Java 17+ writes its own PKCS#12 keystores with 10000 iterations; OpenSSL 3 with 2048.
  Modern2023: { iterations: 10_000, macHash: 'SHA-256' },
  LegacyDES: { iterations: 2048, macHash: 'SHA-1' },
};

const OID = {
  keyBag: '1.2.840.113549.1.12.10.1.2', // pkcs8ShroudedKeyBag
  certBag: '1.2.840.113549.1.12.10.1.3',
  x509Certificate: '1.2.840.113549.1.9.22.1',
  friendlyName: '1.2.840.113549.1.9.20',
  localKeyId: '1.2.840.113549.1.9.21',
  data: '1.2.840.113549.1.7.1',
  pbeWithSha1And3KeyTripleDesCbc: '1.2.840.113549.1.12.1.3',
  /** Oracle's trustedKeyUsage: Java reads a certificate bag carrying it as a trusted certificate entry. */
  javaTrustedKeyUsage: '2.16.840.1.113894.746875.1.1',
  anyExtendedKeyUsage: '2.5.29.37.0',
} as const;

const engine = new pkijs.CryptoEngine({ name: 'node', crypto: webcrypto as unknown as Crypto });

export interface KeystoreInput {
  /** The leaf certificate, PEM. */
  certPem: string;
  /** Its private key, PEM (PKCS#8). */
  keyPem: string;
  /** CA certificates to send after the leaf (its issuer), PEM; may be empty. */
  chainPem: string;
  alias: string;
  password: string;
  profile: Pkcs12Profile;
}

/** A PKCS#12 keystore with one private key entry: the key, the leaf and its chain. DER bytes. */
export async function pkcs12Keystore(input: KeystoreInput): Promise<Buffer> {
  const settings = PROFILES[input.profile];
  const password = passwordBytes(input.password);
  const leaf = parseCertificates(input.certPem)[0];
  if (!leaf) throw new Error('the keystore needs a certificate; none was given');
  const localKeyId = createHash('sha1').update(Buffer.from(leaf.rawData)).digest();
  const entryAttributes = [friendlyName(input.alias), localKeyIdAttribute(localKeyId)];

  const keyInfo = pkijs.PrivateKeyInfo.fromBER(pemBody(input.keyPem, 'PRIVATE KEY'));
  const keyBag = new pkijs.PKCS8ShroudedKeyBag({ parsedValue: keyInfo });
  await encryptKeyBag(keyBag, password, input.profile, settings);

  const certBags = [
    certBag(leaf.rawData, entryAttributes),
    ...parseCertificates(input.chainPem).map((ca) => certBag(ca.rawData, [])),
  ];
  return pfx(
    [
      { bags: certBags, encrypt: true },
      {
        bags: [new pkijs.SafeBag({ bagId: OID.keyBag, bagValue: keyBag, bagAttributes: entryAttributes })],
        encrypt: false, // the key bag is encrypted itself
      },
    ],
    password,
    input.profile,
    settings,
  );
}

export interface TruststoreInput {
  /** The CA certificates to trust, PEM (one or more). */
  caPem: string;
  password: string;
  profile: Pkcs12Profile;
}

/** A PKCS#12 truststore: one trusted certificate entry per CA, aliases `ca-<serial>`. DER bytes. */
export async function pkcs12Truststore(input: TruststoreInput): Promise<Buffer> {
  const settings = PROFILES[input.profile];
  const cas = parseCertificates(input.caPem);
  if (cas.length === 0) throw new Error('the truststore needs at least one CA certificate; none was given');
  const trusted = new pkijs.Attribute({
    type: OID.javaTrustedKeyUsage,
    values: [new asn1js.ObjectIdentifier({ value: OID.anyExtendedKeyUsage })],
  });
  const bags = cas.map((ca) => certBag(ca.rawData, [friendlyName(`ca-${ca.serialNumber.toLowerCase()}`), trusted]));
  return pfx([{ bags, encrypt: true }], passwordBytes(input.password), input.profile, settings);
}

// ---- building blocks ---------------------------------------------------------------------------------

function passwordBytes(password: string): ArrayBuffer {
  // PBKDF2 takes the UTF-8 bytes (as OpenSSL and Java do); pkijs turns them into a BMPString for the MAC.
  return new Uint8Array(Buffer.from(password, 'utf8')).buffer;
}

function pemBody(pem: string, label: string): ArrayBuffer {
  const match = new RegExp(`-----BEGIN ${label}-----([^-]+)-----END ${label}-----`).exec(pem);
  if (!match) throw new Error(`expected a PEM ${label} (PKCS#8)`);
  return new Uint8Array(Buffer.from(match[1]!.replace(/\s+/g, ''), 'base64')).buffer;
}

function friendlyName(name: string): pkijs.Attribute {
  return new pkijs.Attribute({ type: OID.friendlyName, values: [new asn1js.BmpString({ value: name })] });
}

function localKeyIdAttribute(id: Buffer): pkijs.Attribute {
  return new pkijs.Attribute({
    type: OID.localKeyId,
    values: [new asn1js.OctetString({ valueHex: new Uint8Array(id).buffer })],
  });
}

function certBag(der: ArrayBuffer, attributes: pkijs.Attribute[]): pkijs.SafeBag {
  const cert = pkijs.Certificate.fromBER(der);
  return new pkijs.SafeBag({
    bagId: OID.certBag,
    bagValue: new pkijs.CertBag({ parsedValue: cert }),
    ...(attributes.length ? { bagAttributes: attributes } : {}),
  });
}

async function encryptKeyBag(
  bag: pkijs.PKCS8ShroudedKeyBag,
  password: ArrayBuffer,
  profile: Pkcs12Profile,
  settings: ProfileSettings,
): Promise<void> {
  const plain = bag.parsedValue!.toSchema().toBER(false);
  if (profile === 'LegacyDES') {
    const { algorithm, encrypted } = legacyEncrypt(plain, password, settings.iterations);
    bag.encryptionAlgorithm = algorithm;
    bag.encryptedData = new asn1js.OctetString({ valueHex: encrypted });
    return;
  }
  await bag.makeInternalValues(modernEncryption(password, settings), engine);
}

function modernEncryption(password: ArrayBuffer, settings: ProfileSettings) {
  return {
    password,
    // pkijs draws a random IV for every encryption; its parameter type asks for one all the same.
    contentEncryptionAlgorithm: { name: 'AES-CBC', length: 256, iv: new Uint8Array(16) },
    hmacHashAlgorithm: 'SHA-256',
    iterationCount: settings.iterations,
  };
}

/** Assembles the PFX: each group of bags is one SafeContents, encrypted or not, then the password MAC. */
async function pfx(
  groups: { bags: pkijs.SafeBag[]; encrypt: boolean }[],
  password: ArrayBuffer,
  profile: Pkcs12Profile,
  settings: ProfileSettings,
): Promise<Buffer> {
  const contents = groups.map((group) => new pkijs.SafeContents({ safeBags: group.bags }));
  const authenticatedSafe = new pkijs.AuthenticatedSafe({
    parsedValue: {
      safeContents: contents.map((value, i) => ({
        privacyMode: groups[i]!.encrypt && profile === 'Modern2023' ? 1 : 0,
        value,
      })),
    },
  });
  await authenticatedSafe.makeInternalValues(
    { safeContents: groups.map(() => modernEncryption(password, settings)) },
    engine,
  );
  if (profile === 'LegacyDES') {
    // pkijs encrypts content with PBES2 only: the legacy profile encrypts the certificate SafeContents here.
    authenticatedSafe.safeContents = contents.map((value, i) => {
      const der = value.toSchema().toBER(false);
      if (!groups[i]!.encrypt) return authenticatedSafe.safeContents[i]!;
      const { algorithm, encrypted } = legacyEncrypt(der, password, settings.iterations);
      const encryptedData = new pkijs.EncryptedData({
        version: 0,
        encryptedContentInfo: new pkijs.EncryptedContentInfo({
          contentType: OID.data,
          contentEncryptionAlgorithm: algorithm,
          encryptedContent: new asn1js.OctetString({ valueHex: encrypted }),
        }),
      });
      return new pkijs.ContentInfo({
        contentType: pkijs.ContentInfo.ENCRYPTED_DATA,
        content: encryptedData.toSchema(),
      });
    });
  }
  const pfx = new pkijs.PFX({ parsedValue: { integrityMode: 0, authenticatedSafe } });
  await pfx.makeInternalValues(
    {
      password,
      iterations: settings.iterations,
      pbkdf2HashAlgorithm: settings.macHash,
      hmacHashAlgorithm: settings.macHash,
    },
    engine,
  );
  return Buffer.from(pfx.toSchema().toBER(false));
}

/** pbeWithSHAAnd3-KeyTripleDES-CBC (RFC 7292 appendix C): key and IV from the PKCS#12 KDF with SHA-1. */
function legacyEncrypt(
  plain: ArrayBuffer,
  password: ArrayBuffer,
  iterations: number,
): { algorithm: pkijs.AlgorithmIdentifier; encrypted: ArrayBuffer } {
  const salt = randomBytes(8);
  const key = pkcs12Kdf(password, salt, iterations, 1, 24);
  const iv = pkcs12Kdf(password, salt, iterations, 2, 8);
  const cipher = createCipheriv('des-ede3-cbc', key, iv);
  const encrypted = Buffer.concat([cipher.update(Buffer.from(plain)), cipher.final()]);
  const params = new asn1js.Sequence({
    value: [
      new asn1js.OctetString({ valueHex: new Uint8Array(salt).buffer }),
      new asn1js.Integer({ value: iterations }),
    ],
  });
  return {
    algorithm: new pkijs.AlgorithmIdentifier({
      algorithmId: OID.pbeWithSha1And3KeyTripleDesCbc,
      algorithmParams: params,
    }),
    encrypted: new Uint8Array(encrypted).buffer,
  };
}

/**
 * The PKCS#12 key derivation (RFC 7292 appendix B.2) with SHA-1, for `id` 1 (key) or 2 (IV). pkijs has it
 * only for the MAC key (id 3) and does not export it; the legacy profile needs the other two.
 */
export function pkcs12Kdf(
  password: ArrayBuffer,
  salt: Buffer,
  iterations: number,
  id: 1 | 2 | 3,
  length: number,
): Buffer {
  const u = 20;
  const v = 64;
  // The password as a BMPString with a terminating zero, as the MAC derivation has it.
  const text = Buffer.from(password).toString('utf8');
  const bmp = Buffer.alloc(text.length * 2 + 2);
  for (let i = 0; i < text.length; i++) bmp.writeUInt16BE(text.charCodeAt(i), i * 2);
  const fill = (source: Buffer) => {
    const out = Buffer.alloc(source.length === 0 ? 0 : v * Math.ceil(source.length / v));
    for (let i = 0; i < out.length; i++) out[i] = source[i % source.length]!;
    return out;
  };
  const D = Buffer.alloc(v, id);
  const I = Buffer.concat([fill(salt), fill(bmp)]);
  const out: Buffer[] = [];
  for (let produced = 0; produced < length; produced += u) {
    let A = createHash('sha1').update(D).update(I).digest();
    for (let j = 1; j < iterations; j++) A = createHash('sha1').update(A).digest();
    out.push(A);
    const B = Buffer.alloc(v);
    for (let i = 0; i < v; i++) B[i] = A[i % u]!;
    // I_j = (I_j + B + 1) mod 2^(v*8) for each v-byte block of I.
    for (let block = 0; block < I.length; block += v) {
      let carry = 1;
      for (let i = v - 1; i >= 0; i--) {
        const sum = I[block + i]! + B[i]! + carry;
        I[block + i] = sum & 0xff;
        carry = sum >> 8;
      }
    }
  }
  return Buffer.concat(out).subarray(0, length);
}

/**
 * A digest of everything a keystore or truststore holds (and how it is protected), to tell whether a stored one
 * is still current without reading it back: the stores are encrypted with a random salt, so equal content
 * never has equal bytes. Keyed with the private key, so that the digest, stored beside the stores in the
 * Secret, reveals nothing about the password to anyone who does not already hold that key.
 */
export function keystoreInputsDigest(input: {
  keyPem: string;
  certPem: string;
  /** The trust bundle; the keystore's chain is derived from it and the certificate. */
  caPem: string;
  alias: string;
  password: string;
  profile: Pkcs12Profile;
  formats: readonly string[];
}): string {
  const hmac = createHmac('sha256', input.keyPem);
  for (const part of [
    'v1',
    input.certPem.trim(),
    input.caPem.trim(),
    input.alias,
    input.password,
    input.profile,
    ...input.formats,
  ]) {
    hmac.update(`${Buffer.byteLength(part)}:`).update(part);
  }
  return hmac.digest('hex').slice(0, 32);
}
