import type { V1Secret } from '@kubernetes/client-node';
import { appendFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parseCertificates } from '../../operator/pki/inspect.ts';
import { openssl, pemFiles } from '../support/openssl.ts';

export const CLI = new URL('../../operator/cli.ts', import.meta.url).pathname;
export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** mulberry32: a small seeded PRNG, so a failing run can be replayed with the same seed. */
export function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (min: number, max: number) => min + Math.floor(next() * (max - min + 1)),
    pick: <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)]!,
  };
}

/** The seed of a run: REL_SEED if set (to replay a failure), else a fixed default. */
export const SEED = Number(process.env.REL_SEED ?? 20_240_909);

/**
 * One summary line per reliability file ("reliability: faults injected 20 / survived 20"): written to the
 * terminal and appended to reliability-summary.txt beside the test control plane, which the summary reporter
 * prints again at the end of the run.
 */
export function reportSummary(line: string): void {
  const text = `reliability: ${line}`;
  process.stdout.write(`${text}\n`);
  const stateFile = process.env.MTLS_TEST_CONTROL_PLANE_STATE;
  if (stateFile) appendFileSync(join(dirname(stateFile), 'reliability-summary.txt'), `${text}\n`);
}

export { type OperatorProcess, spawnOperator, waitHealthy } from '../support/operator.ts';

export const b64 = (secret: V1Secret | undefined, key: string): string | undefined => {
  const value = secret?.data?.[key];
  return value === undefined ? undefined : Buffer.from(value, 'base64').toString('utf8');
};

export const serialOf = (pem: string) => parseCertificates(pem)[0]!.serialNumber.toLowerCase();

/** `openssl verify -CAfile bundle cert`; resolves with an error text, or undefined when it verifies. */
export async function verifyProblem(bundle: string, cert: string, atMs?: number): Promise<string | undefined> {
  const files = pemFiles({ 'bundle.pem': bundle, 'cert.pem': cert });
  const at = atMs === undefined ? [] : ['-attime', String(Math.floor(atMs / 1000))];
  try {
    const out = await openssl(['verify', ...at, '-CAfile', files['bundle.pem']!, files['cert.pem']!]);
    return out.includes(': OK') ? undefined : out;
  } catch (err) {
    return (err as Error).message;
  }
}

/** Whether the private key belongs to the certificate, by openssl's own reading of both. */
export async function keyMatches(certPem: string, keyPem: string): Promise<boolean> {
  const files = pemFiles({ 'c.pem': certPem, 'k.pem': keyPem });
  try {
    const fromCert = await openssl(['x509', '-in', files['c.pem']!, '-pubkey', '-noout']);
    const fromKey = await openssl(['pkey', '-in', files['k.pem']!, '-pubout']);
    return fromCert.trim() === fromKey.trim();
  } catch {
    return false;
  }
}

/**
 * What a user would find wrong with an endpoint's Secrets: each leaf must verify against the bundle it ships
 * with and against the server's bundle (what the sidecar trusts), and hold the key of its certificate.
 * Validity is judged at `readAtMs`, when the Secrets were read (default: now): a 10 s certificate read in
 * time can expire while a loaded machine is still checking the rest.
 */
export async function secretProblems(
  secrets: V1Secret[],
  endpoint: string,
  clients: string[],
  readAtMs?: number,
): Promise<string[]> {
  const problems: string[] = [];
  const byName = new Map(secrets.map((s) => [s.metadata!.name!, s]));
  const ca = byName.get(`${endpoint}-ca`);
  const server = byName.get(`${endpoint}-server`);
  const caCrt = b64(ca, 'ca.crt');
  if (!caCrt || !b64(ca, 'ca.key')) return [`${endpoint}-ca is missing or incomplete`];
  if (!(await keyMatches(caCrt.split(/(?<=-----END CERTIFICATE-----)/)[0]!, b64(ca, 'ca.key')!)))
    problems.push(`${endpoint}-ca: key does not match`);
  const serverBundle = b64(server, 'ca.crt');
  const leaves: [string, V1Secret | undefined][] = [
    [`${endpoint}-server`, server],
    ...clients.map((c): [string, V1Secret | undefined] => [
      `${endpoint}-client-${c}`,
      byName.get(`${endpoint}-client-${c}`),
    ]),
  ];
  for (const [name, secret] of leaves) {
    const crt = b64(secret, 'tls.crt');
    const key = b64(secret, 'tls.key');
    const bundle = b64(secret, 'ca.crt');
    if (!crt || !key || !bundle || !serverBundle) {
      problems.push(`${name} is missing or incomplete`);
      continue;
    }
    const own = await verifyProblem(bundle, crt, readAtMs);
    if (own) problems.push(`${name}: does not verify against its own ca.crt: ${own}`);
    const sidecar = await verifyProblem(serverBundle, crt, readAtMs);
    if (sidecar) problems.push(`${name}: does not verify against the server bundle: ${sidecar}`);
    if (!(await keyMatches(crt, key))) problems.push(`${name}: tls.key does not match tls.crt`);
    if (secret !== server) {
      const serverCert = await verifyProblem(bundle, b64(server, 'tls.crt') ?? '', readAtMs);
      if (serverCert) problems.push(`${name}: its ca.crt does not verify the server certificate: ${serverCert}`);
    }
  }
  return problems;
}

/** openssl's reading of a certificate's subject (RFC 2253) and subjectAltName extension text. */
export async function certNames(certPem: string): Promise<{ subject: string; sans: string }> {
  const files = pemFiles({ 'c.pem': certPem });
  const subject = await openssl(['x509', '-in', files['c.pem']!, '-noout', '-subject', '-nameopt', 'RFC2253']);
  const sans = await openssl(['x509', '-in', files['c.pem']!, '-noout', '-ext', 'subjectAltName']).catch(() => '');
  return { subject: subject.trim().replace(/^subject=\s*/, ''), sans };
}

/**
 * What a leaked private key would look like in text: each base64 line (40 characters or more) of its PEM
 * body, and 64-character slices of the base64 of the whole PEM (the form a Secret's `data` holds it in). A key
 * is then found whether it leaked as PEM, as its body re-wrapped on one line, or inside a dumped Secret.
 */
export function keyNeedles(keyPem: string): string[] {
  const body = keyPem
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line.length >= 40 && !line.startsWith('-----'));
  const data = Buffer.from(keyPem).toString('base64');
  const slices: string[] = [];
  // From the second slice: the first encodes the PEM header and the algorithm's fixed prefix, common to all keys.
  for (let i = 64; i + 64 <= data.length; i += 64) slices.push(data.slice(i, i + 64));
  return [...body, ...slices];
}

/**
 * Where key material of `keyPems`, or the words PRIVATE KEY, occur in `haystack`; empty if nowhere. The one
 * exception is operator/pki's description of a truncated key, "(no END PRIVATE KEY line)", which names the
 * missing PEM line and carries no key material.
 */
export function findKeyMaterial(haystack: string, keyPems: Iterable<string>): string[] {
  const found: string[] = [];
  for (const match of haystack.matchAll(/PRIVATE KEY/g)) {
    const at = match.index;
    if (at >= 8 && haystack.slice(at - 8, at + 17) === '(no END PRIVATE KEY line)') continue;
    found.push(`"PRIVATE KEY" at offset ${at}: ${haystack.slice(Math.max(0, at - 80), at + 40)}`);
    if (found.length >= 20) break;
  }
  for (const pem of keyPems) {
    for (const needle of keyNeedles(pem)) {
      const at = haystack.indexOf(needle);
      if (at >= 0) found.push(`key material ${needle.slice(0, 12)}... at offset ${at}`);
    }
  }
  return found;
}
