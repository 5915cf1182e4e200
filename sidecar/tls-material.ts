import { createHash, X509Certificate } from 'node:crypto';
import { type FSWatcher, readFileSync, watch } from 'node:fs';
import { join } from 'node:path';
import { createSecureContext, type SecureContextOptions } from 'node:tls';
import { type CrlFacts, readCrl, signedBy } from './crl-check.ts';

/** What one reload of the TLS folder produced: the options every listener's context is built from. */
export interface TlsMaterial {
  options: SecureContextOptions;
  notAfter: Date;
  /** sha256 of the four files, to tell a real change from a touch. */
  digest: string;
  hasCrl: boolean;
  /** Usable, but some clients will be refused because of it (a CA without a CRL, a CRL past nextUpdate). */
  warnings: string[];
}

const FILES = ['tls.crt', 'tls.key', 'ca.crt', 'ca.crl'] as const;

/**
 * TLS 1.3 suites, then TLS 1.2 with ECDHE (forward secrecy) and an AEAD cipher only: Node's default list
 * (its `HIGH` part) also offers CBC suites with SHA-1 and SHA-256/384 MACs (ECDHE-ECDSA-AES128-SHA, ...),
 * which a scan reports as weak. Both ECDSA and RSA server keys are covered (keyAlgorithm may be RSA-*).
 * Mozilla's "intermediate" profile, without DHE (it needs a dhparam and adds nothing here).
 */
export const CIPHERS = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

/** Key exchange groups, in the server's order of preference. */
export const ECDH_CURVES = 'X25519:P-256:P-384';

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]+?-----END \1-----/g;

/** The PEM blocks of a file, with their labels. */
function pemBlocks(text: string): { label: string; pem: string }[] {
  return [...text.matchAll(PEM_BLOCK)].map((m) => ({ label: m[1]!, pem: m[0] + '\n' }));
}

/**
 * The CRLs of `ca.crl`, one PEM string each. OpenSSL (through Node's `crl` option) reads only the first CRL
 * of a string, so a bundle (one CRL per CA during a CA rollover) must be handed over as an array, or the
 * clients of the second CA fail with UNABLE_TO_GET_CRL. Each CRL must be signed by a CA of `ca.crt`.
 */
function checkCrls(
  crlText: string,
  caText: string,
  crlPath: string,
  now: Date,
): { crls: string[]; warnings: string[] } {
  const blocks = pemBlocks(crlText);
  const stray = crlText.replace(PEM_BLOCK, '').trim();
  if (blocks.length === 0 || stray) throw new Error(`${crlPath}: not a PEM "X509 CRL" bundle`);
  const cas = pemBlocks(caText)
    .filter((b) => b.label === 'CERTIFICATE')
    .map((b) => new X509Certificate(b.pem));
  const warnings: string[] = [];
  const covered = new Set<X509Certificate>();
  for (const [i, block] of blocks.entries()) {
    if (block.label !== 'X509 CRL') throw new Error(`${crlPath}: block ${i + 1} is "${block.label}", not "X509 CRL"`);
    let crl: CrlFacts;
    try {
      crl = readCrl(Buffer.from(block.pem.replace(/-----[A-Z0-9 ]+-----/g, ''), 'base64'));
    } catch (err) {
      throw new Error(`${crlPath}: block ${i + 1} is not a CRL (${(err as Error).message})`);
    }
    const signer = cas.find((ca) => signedBy(crl, ca));
    if (!signer) throw new Error(`${crlPath}: CRL ${i + 1} is not signed by any CA of ca.crt`);
    covered.add(signer);
    if (crl.nextUpdate && crl.nextUpdate < now) {
      warnings.push(
        `the CRL of "${signer.subject.replace(/\n/g, ', ')}" expired at ${crl.nextUpdate.toISOString()}: its clients are refused until a fresh one arrives`,
      );
    }
  }
  for (const ca of cas) {
    if (!covered.has(ca))
      warnings.push(
        `ca.crt holds "${ca.subject.replace(/\n/g, ', ')}" but ca.crl has no CRL of it: its clients are refused`,
      );
  }
  return { crls: blocks.map((b) => b.pem), warnings };
}

/** The four files as read, and a digest of them (missing files included), to tell a change from a touch. */
export interface TlsFiles {
  dir: string;
  text: Partial<Record<(typeof FILES)[number], string>>;
  /** Read errors by file (a missing ca.crl is not one: it is optional). */
  errors: string[];
  digest: string;
}

export async function readTlsFiles(dir: string): Promise<TlsFiles> {
  const text: TlsFiles['text'] = {};
  const errors: string[] = [];
  // Synchronous on purpose: four small files on a tmpfs (a Secret volume), read at start and at each poll.
  // Async reads would start libuv's thread pool: ~1 MiB of resident memory the sidecar needs for nothing else.
  for (const name of FILES) {
    try {
      text[name] = readFileSync(join(dir, name), 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (!(name === 'ca.crl' && code === 'ENOENT'))
        errors.push(`${join(dir, name)}: ${code ?? (err as Error).message}`);
    }
  }
  const hash = createHash('sha256');
  for (const name of FILES) hash.update(text[name] ?? '').update('\0');
  for (const error of errors) hash.update(error);
  return { dir, text, errors, digest: hash.digest('hex') };
}

/**
 * Validates what was read from a Secret-volume folder by building a secure context once, after checking
 * the CRLs against the CAs. Throws with a message that names the file that is wrong.
 */
export async function buildTlsMaterial(files: TlsFiles, now = new Date()): Promise<TlsMaterial> {
  if (files.errors.length) throw new Error(files.errors.join('; '));
  const { dir } = files;
  const { 'tls.crt': cert, 'tls.key': key, 'ca.crt': ca, 'ca.crl': crl } = files.text;
  let notAfter: Date;
  try {
    notAfter = new Date(new X509Certificate(cert!).validTo);
  } catch {
    throw new Error(`${join(dir, 'tls.crt')} is not a PEM certificate`);
  }
  if (!/-----BEGIN CERTIFICATE-----/.test(ca!)) throw new Error(`${join(dir, 'ca.crt')} holds no PEM certificate`);
  const checked = crl?.trim() ? checkCrls(crl, ca!, join(dir, 'ca.crl'), now) : undefined;
  const options: SecureContextOptions = {
    cert,
    key,
    ca,
    ...(checked ? { crl: checked.crls } : {}),
    minVersion: 'TLSv1.2',
    ciphers: CIPHERS,
    honorCipherOrder: true,
    ecdhCurve: ECDH_CURVES,
  };
  try {
    createSecureContext(options);
  } catch (err) {
    const message = (err as Error).message;
    const file = /crl/i.test(message) ? 'ca.crl' : /key/i.test(message) ? 'tls.key' : 'tls.crt/tls.key/ca.crt';
    throw new Error(`${join(dir, file)}: ${message}`);
  }
  return { options, notAfter, digest: files.digest, hasCrl: !!checked, warnings: checked?.warnings ?? [] };
}

/** Reads and validates tls.crt, tls.key, ca.crt and the optional ca.crl of a Secret-volume folder. */
export async function loadTlsMaterial(dir: string, now = new Date()): Promise<TlsMaterial> {
  return buildTlsMaterial(await readTlsFiles(dir), now);
}

/**
 * Calls `onChange` when the folder's content changes: kubelet swaps the `..data` symlink, which fs.watch
 * reports on the folder; a slow poll backs it up (some filesystems do not report renames of symlinks).
 */
export function watchTlsDir(dir: string, onChange: () => void, pollMs = 5_000): () => void {
  let watcher: FSWatcher | undefined;
  let debounce: NodeJS.Timeout | undefined;
  const fire = () => {
    clearTimeout(debounce);
    debounce = setTimeout(onChange, 100);
  };
  try {
    watcher = watch(dir, fire);
    watcher.on('error', () => undefined);
  } catch {
    // no inotify: the poll below still notices
  }
  const poll = setInterval(onChange, pollMs);
  poll.unref();
  return () => {
    watcher?.close();
    clearInterval(poll);
    clearTimeout(debounce);
  };
}

export { FILES as TLS_FILES };
