import type { V1Secret } from '@kubernetes/client-node';
import { type Pkcs12Profile, SECRET_KEYS } from '../api/types.ts';
import { secretText } from '../kube/secret-data.ts';
import { issuedBy } from '../pki/certs.ts';
import { keystoreInputsDigest, pkcs12Keystore, pkcs12Truststore } from '../pki/pkcs12.ts';
import { parseCertificates } from '../pki/inspect.ts';
import { certificateToPem } from '../pki/x509.ts';

/**
 * The PKCS#12 keystores of a client Secret (spec.clients[].keystores.pkcs12): what to write, decided from the
 * certificate, key and trust bundle the Secret is about to hold and the password. The stores are encrypted with
 * random salts, so two builds of the same content differ in every byte: an annotation keeps a digest of what
 * they were built from, and they are rebuilt only when that changes (a renewal, a re-issue, a CA joining or
 * leaving ca.crt, a new password or profile).
 */
export const KEYSTORE_INPUTS_ANNOTATION = 'mtls.operator.dev/keystore-inputs';

/** While a password Secret is missing the operator looks again this often (it does not watch such Secrets). */
export const KEYSTORE_PASSWORD_RETRY_MS = 30_000;

/** A client's resolved request: spec.clients[].keystores.pkcs12 with create: true and its defaults applied. */
export interface Pkcs12Request {
  passwordSecret: string;
  passwordKey: string;
  profile: Pkcs12Profile;
}

export type PasswordLookup = { password: string } | { problem: string };

/** The password in the Secret a request names, or what is wrong with that Secret, said so a person can fix it. */
export function keystorePassword(
  secret: V1Secret | undefined,
  request: Pkcs12Request,
  where: { namespace: string; client: string; field?: string },
): PasswordLookup {
  const field = where.field ?? `spec.clients[${where.client}].keystores.pkcs12.passwordSecretRef`;
  const fix =
    `create it: kubectl -n ${where.namespace} create secret generic ${request.passwordSecret} ` +
    `--from-literal=${request.passwordKey}=<password>`;
  if (!secret) {
    return {
      problem: `Secret ${where.namespace}/${request.passwordSecret} (${field}) does not exist, so client ${where.client}'s keystore.p12 and truststore.p12 cannot be written; ${fix}.`,
    };
  }
  const password = secretText(secret, request.passwordKey);
  if (!password) {
    return {
      problem: `Secret ${where.namespace}/${request.passwordSecret} (${field}) has ${password === '' ? 'an empty' : 'no'} key ${request.passwordKey}, so client ${where.client}'s keystore.p12 and truststore.p12 cannot be written; put the password under that key, or set ${field}.key to the key that holds it.`,
    };
  }
  if (!/^[\x20-\x7e]+$/.test(password)) {
    // Java derives PBES2 keys only from ASCII passwords ("Password is not ASCII"); OpenSSL would take it.
    return {
      problem: `Secret ${where.namespace}/${request.passwordSecret} (${field}) key ${request.passwordKey} holds characters other than printable ASCII, which Java refuses in a PKCS#12 password; use letters, digits, punctuation and spaces only (without a trailing newline).`,
    };
  }
  return { password };
}

export interface KeystoreContent {
  /** Secret data entries (base64), to add to the Secret's. */
  data: Record<string, string>;
  annotations: Record<string, string>;
}

/**
 * keystore.p12 and truststore.p12 for a client Secret. Without a password the stores last written are kept as
 * they are (a client restarting meanwhile still finds them; the endpoint reports why they are not current).
 */
export async function pkcs12Content(input: {
  request: Pkcs12Request;
  password: PasswordLookup;
  existing: V1Secret | undefined;
  alias: string;
  certPem: string;
  keyPem: string;
  /** The trust bundle (ca.crt) the Secret holds. */
  caPem: string;
}): Promise<KeystoreContent> {
  const stored = {
    keystore: input.existing?.data?.[SECRET_KEYS.keystoreP12],
    truststore: input.existing?.data?.[SECRET_KEYS.truststoreP12],
    digest: input.existing?.metadata?.annotations?.[KEYSTORE_INPUTS_ANNOTATION],
  };
  if ('problem' in input.password) {
    if (!stored.keystore || !stored.truststore || !stored.digest) return { data: {}, annotations: {} };
    return {
      data: { [SECRET_KEYS.keystoreP12]: stored.keystore, [SECRET_KEYS.truststoreP12]: stored.truststore },
      annotations: { [KEYSTORE_INPUTS_ANNOTATION]: stored.digest },
    };
  }
  const { password } = input.password;
  const { profile } = input.request;
  const digest = keystoreInputsDigest({
    keyPem: input.keyPem,
    certPem: input.certPem,
    caPem: input.caPem,
    alias: input.alias,
    password,
    profile,
    formats: [SECRET_KEYS.keystoreP12, SECRET_KEYS.truststoreP12],
  });
  const annotations = { [KEYSTORE_INPUTS_ANNOTATION]: digest };
  if (stored.keystore && stored.truststore && stored.digest === digest) {
    return {
      data: { [SECRET_KEYS.keystoreP12]: stored.keystore, [SECRET_KEYS.truststoreP12]: stored.truststore },
      annotations,
    };
  }
  const chainPem = await issuersOf(input.certPem, input.caPem);
  const [keystore, truststore] = await Promise.all([
    pkcs12Keystore({ certPem: input.certPem, keyPem: input.keyPem, chainPem, alias: input.alias, password, profile }),
    pkcs12Truststore({ caPem: input.caPem, password, profile }),
  ]);
  return {
    data: {
      [SECRET_KEYS.keystoreP12]: keystore.toString('base64'),
      [SECRET_KEYS.truststoreP12]: truststore.toString('base64'),
    },
    annotations,
  };
}

/** The CAs of the bundle that signed the certificate (one; none if the bundle is being repaired), PEM. */
async function issuersOf(certPem: string, caPem: string): Promise<string> {
  const cas = parseCertificates(caPem).map(certificateToPem);
  const signed = await Promise.all(cas.map((ca) => issuedBy(certPem, ca)));
  return cas.filter((_, i) => signed[i]).join('');
}
