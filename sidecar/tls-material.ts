import { createHash, X509Certificate } from 'node:crypto';
import { type FSWatcher, watch } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createSecureContext, type SecureContextOptions } from 'node:tls';

/** What one reload of the TLS folder produced: the options every listener's context is built from. */
export interface TlsMaterial {
  options: SecureContextOptions;
  notAfter: Date;
  /** sha256 of the four files, to tell a real change from a touch. */
  digest: string;
  hasCrl: boolean;
}

const FILES = ['tls.crt', 'tls.key', 'ca.crt', 'ca.crl'] as const;

/**
 * Reads tls.crt, tls.key, ca.crt and the optional ca.crl from a Secret-volume folder and validates them by
 * building a secure context once. Throws with a message that names the file that is wrong.
 */
export async function loadTlsMaterial(dir: string): Promise<TlsMaterial> {
  const read = async (name: string, optional = false) => {
    try {
      return await readFile(join(dir, name), 'utf8');
    } catch (err) {
      if (optional && (err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new Error(`${join(dir, name)}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  };
  const [cert, key, ca, crl] = await Promise.all([
    read('tls.crt'),
    read('tls.key'),
    read('ca.crt'),
    read('ca.crl', true),
  ]);
  let notAfter: Date;
  try {
    notAfter = new Date(new X509Certificate(cert!).validTo);
  } catch {
    throw new Error(`${join(dir, 'tls.crt')} is not a PEM certificate`);
  }
  if (!/-----BEGIN CERTIFICATE-----/.test(ca!)) throw new Error(`${join(dir, 'ca.crt')} holds no PEM certificate`);
  const options: SecureContextOptions = {
    cert,
    key,
    ca,
    ...(crl && crl.trim() ? { crl } : {}),
    minVersion: 'TLSv1.2',
  };
  try {
    createSecureContext(options);
  } catch (err) {
    const message = (err as Error).message;
    const file = /crl/i.test(message) ? 'ca.crl' : /key/i.test(message) ? 'tls.key' : 'tls.crt/tls.key/ca.crt';
    throw new Error(`${join(dir, file)}: ${message}`);
  }
  const digest = createHash('sha256');
  for (const part of [cert, key, ca, crl ?? '']) digest.update(part!).update('\0');
  return { options, notAfter, digest: digest.digest('hex'), hasCrl: !!options.crl };
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
