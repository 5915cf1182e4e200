import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { createPrivateKey, createPublicKey, randomBytes } from 'node:crypto';
import { KEY_ALGORITHMS, type KeyAlgorithm } from '../api/types.ts';

x509.cryptoProvider.set(globalThis.crypto);

export { x509 };

type KeyParams = EcKeyGenParams | RsaHashedKeyGenParams;

function keyParams(algorithm: KeyAlgorithm): KeyParams {
  switch (algorithm) {
    case 'ECDSA-P256':
      return { name: 'ECDSA', namedCurve: 'P-256' };
    case 'ECDSA-P384':
      return { name: 'ECDSA', namedCurve: 'P-384' };
    default:
      return {
        name: 'RSASSA-PKCS1-v1_5',
        modulusLength: Number(algorithm.slice(4)),
        publicExponent: new Uint8Array([1, 0, 1]),
        hash: 'SHA-256',
      };
  }
}

/** The algorithm a key of this kind signs with (what the issuer's key decides for a certificate or CRL). */
export function signingAlgorithm(key: CryptoKey): EcdsaParams | Algorithm {
  if (key.algorithm.name === 'ECDSA') {
    const curve = (key.algorithm as EcKeyAlgorithm).namedCurve;
    return { name: 'ECDSA', hash: curve === 'P-384' ? 'SHA-384' : 'SHA-256' } as EcdsaParams;
  }
  return { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' } as Algorithm;
}

export function generateKeyPair(algorithm: KeyAlgorithm): Promise<CryptoKeyPair> {
  return crypto.subtle.generateKey(keyParams(algorithm), true, ['sign', 'verify']) as Promise<CryptoKeyPair>;
}

export async function privateKeyToPem(key: CryptoKey): Promise<string> {
  const der = await crypto.subtle.exportKey('pkcs8', key);
  return x509.PemConverter.encode(der, 'PRIVATE KEY') + '\n';
}

/** The algorithm of a PEM private key (PKCS#8, SEC1 or PKCS#1), or undefined if it is none we issue. */
export function keyAlgorithmOfPem(pem: string): KeyAlgorithm | undefined {
  const key = createPrivateKey(pem);
  const details = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === 'ec') {
    if (details.namedCurve === 'prime256v1') return 'ECDSA-P256';
    if (details.namedCurve === 'secp384r1') return 'ECDSA-P384';
    return undefined;
  }
  if (key.asymmetricKeyType === 'rsa') {
    const name = `RSA-${details.modulusLength}`;
    return (KEY_ALGORITHMS as readonly string[]).includes(name) ? (name as KeyAlgorithm) : undefined;
  }
  return undefined;
}

/** Imports a PEM private key together with its public half. Throws a readable error for garbage. */
export async function importKeyPairPem(pem: string): Promise<{ keys: CryptoKeyPair; algorithm: KeyAlgorithm }> {
  const algorithm = keyAlgorithmOfPem(pem);
  if (!algorithm) throw new Error('unsupported private key type');
  const nodeKey = createPrivateKey(pem);
  const pkcs8 = nodeKey.export({ type: 'pkcs8', format: 'der' });
  const spki = createPublicKey(nodeKey).export({ type: 'spki', format: 'der' });
  const params = keyParams(algorithm);
  const privateKey = await crypto.subtle.importKey('pkcs8', pkcs8, params, true, ['sign']);
  const publicKey = await crypto.subtle.importKey('spki', spki, params, true, ['verify']);
  return { keys: { privateKey, publicKey }, algorithm };
}

/** A 128-bit random positive serial as lower-case hex (DER-minimal: the first byte is never 0). */
export function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = bytes[0]! & 0x7f || 0x01;
  return bytes.toString('hex');
}

export interface CertificateRequest {
  subject: string;
  publicKey: CryptoKey;
  notBefore: Date;
  notAfter: Date;
  isCA?: boolean;
  serverAuth?: boolean;
  clientAuth?: boolean;
  dnsNames?: string[];
  ipAddresses?: string[];
  uris?: string[];
}

export interface Issuer {
  certificate: x509.X509Certificate;
  privateKey: CryptoKey;
}

/** Issues a certificate; without an issuer it is self-signed by `selfKey` (which must match `publicKey`). */
export async function issueCertificate(
  req: CertificateRequest,
  issuer: Issuer | { selfSigned: CryptoKey },
): Promise<x509.X509Certificate> {
  const signingKey = 'selfSigned' in issuer ? issuer.selfSigned : issuer.privateKey;
  const usages = req.isCA
    ? x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature
    : req.publicKey.algorithm.name === 'ECDSA'
      ? x509.KeyUsageFlags.digitalSignature
      : x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment;
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(!!req.isCA, req.isCA ? 0 : undefined, true),
    new x509.KeyUsagesExtension(usages, true),
    await x509.SubjectKeyIdentifierExtension.create(req.publicKey),
  ];
  if ('selfSigned' in issuer) {
    extensions.push(await x509.AuthorityKeyIdentifierExtension.create(req.publicKey));
  } else {
    extensions.push(await x509.AuthorityKeyIdentifierExtension.create(issuer.certificate));
  }
  const ekus: string[] = [];
  if (req.serverAuth) ekus.push(x509.ExtendedKeyUsage.serverAuth);
  if (req.clientAuth) ekus.push(x509.ExtendedKeyUsage.clientAuth);
  if (ekus.length > 0) extensions.push(new x509.ExtendedKeyUsageExtension(ekus, false));
  const names: x509.JsonGeneralName[] = [
    ...(req.dnsNames ?? []).map((value) => ({ type: 'dns' as const, value })),
    ...(req.ipAddresses ?? []).map((value) => ({ type: 'ip' as const, value })),
    ...(req.uris ?? []).map((value) => ({ type: 'url' as const, value })),
  ];
  if (names.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(names, false));
  return x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: req.subject,
    issuer: 'selfSigned' in issuer ? req.subject : issuer.certificate.subject,
    notBefore: req.notBefore,
    notAfter: req.notAfter,
    publicKey: req.publicKey,
    signingKey,
    signingAlgorithm: signingAlgorithm(signingKey),
    extensions,
  });
}

export function certificateToPem(cert: x509.X509Certificate): string {
  return cert.toString('pem') + '\n';
}
