import type { Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { parseSidecarConfig } from '../../sidecar/flags.ts';
import { type RunningSidecar, startSidecar } from '../../sidecar/sidecar.ts';
import type { Pki } from './tls-fixtures.ts';

/**
 * The sidecar in the test's own process, as the in-process tests start it: `listen` (one or more "mode=port",
 * port 0 for an ephemeral one) in front of 127.0.0.1:`upstreamPort`, TLS files from `tlsDir`, the admin port
 * ephemeral on loopback; `extra` are further flags ("--upstream-timeout", "500"...).
 */
export function startTestSidecar(opts: {
  tlsDir: string;
  upstreamPort: number;
  listen?: string | string[];
  extra?: string[];
}): Promise<RunningSidecar> {
  const listen = [opts.listen ?? 'standard=0'].flat().flatMap((l) => ['--listen', l]);
  const config = parseSidecarConfig([
    ...listen,
    ...['--upstream', `127.0.0.1:${opts.upstreamPort}`, '--tls-dir', opts.tlsDir, '--admin', '127.0.0.1:0'],
    ...(opts.extra ?? []),
  ]);
  return startSidecar(config);
}

/** Runs `use` with a sidecar started as startTestSidecar does, and stops it (500 ms to drain) whatever happens. */
export async function withSidecar<T>(
  opts: Parameters<typeof startTestSidecar>[0],
  use: (sidecar: RunningSidecar) => Promise<T>,
): Promise<T> {
  const sidecar = await startTestSidecar(opts);
  try {
    return await use(sidecar);
  } finally {
    await sidecar.stop(500);
  }
}

/** A TLS connection to a sidecar listener on loopback, resolved once the handshake is done. */
export async function connectTls(port: number, opts: { ca: string; client?: Pki['client'] }): Promise<TLSSocket> {
  const socket = tlsConnect({
    host: '127.0.0.1',
    port,
    ca: opts.ca,
    cert: opts.client?.certPem,
    key: opts.client?.keyPem,
    servername: 'localhost',
  });
  await new Promise((resolve) => socket.once('secureConnect', resolve));
  return socket;
}

/** The next chunk the socket receives, as text. */
export const nextData = (socket: Socket): Promise<string> =>
  new Promise((resolve) => socket.once('data', (d: Buffer) => resolve(d.toString())));

/** Everything the socket receives until it closes, as text. */
export const readUntilClose = (socket: Socket): Promise<string> =>
  new Promise((resolve) => {
    let text = '';
    socket.on('data', (d: Buffer) => (text += d.toString()));
    socket.on('close', () => resolve(text));
  });
