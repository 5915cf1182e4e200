import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { AddressInfo, Socket } from 'node:net';
import { join } from 'node:path';
import { createServer, type Server, type TlsOptions, type TLSSocket } from 'node:tls';
import { errorMessage } from '../common/log-text.ts';
import type { ResolvedSidecarConfig, TestListener, TestListenerKind } from './flags.ts';
import type { Logger } from './log.ts';
import { listenAll } from './listen.ts';
import { type TlsMaterial, watchTlsDir } from './tls-material.ts';

/**
 * The bad servers of --test-listen: listeners that misbehave on purpose so that a client team can prove its
 * client refuses them. They never reach the upstream: a client that gets through the handshake is answered a
 * short text saying what was wrong with the server it just accepted.
 */

/** The files of the `<endpoint>-test-servers` Secret (--test-tls-dir); the operator writes them. */
export const TEST_SERVER_FILES = {
  expiredCert: 'expired.crt',
  expiredKey: 'expired.key',
  untrustedCert: 'untrusted.crt',
  untrustedKey: 'untrusted.key',
  wrongHostCert: 'wrong-host.crt',
  wrongHostKey: 'wrong-host.key',
  foreignCa: 'foreign-ca.crt',
} as const;

/** The only name in the WrongHost certificate: `.invalid` can never be a real host (RFC 2606). */
export const WRONG_HOST_NAME = 'wrong-host.invalid';

/** What each bad listener does and what a correct client does about it: the answer body and the docs say this. */
export const TEST_LISTENER_BEHAVIOUR: Record<TestListenerKind, { serves: string; correctClient: string }> = {
  ExpiredCertificate: {
    serves: "a server certificate signed by the endpoint's CA whose notAfter is in the past",
    correctClient: 'refuse the handshake: certificate has expired',
  },
  UntrustedCA: {
    serves: "a server certificate for the endpoint's names signed by a CA that is not the endpoint's",
    correctClient: 'refuse the handshake: unable to get local issuer certificate (unknown CA)',
  },
  WrongHost: {
    serves: `a server certificate signed by the endpoint's CA for ${WRONG_HOST_NAME} only`,
    correctClient: "refuse the handshake: the host name does not match the certificate's names",
  },
  TLS12Only: {
    serves: 'the normal server certificate, TLS 1.2 only',
    correctClient: 'a client that requires TLS 1.3 refuses the handshake: protocol version',
  },
  TLS13Only: {
    serves: 'the normal server certificate, TLS 1.3 only',
    correctClient:
      'a client limited to TLS 1.2 fails the handshake: protocol version (it must not fall back to plain text)',
  },
  ClientCAMismatch: {
    serves:
      "the normal server certificate, and it asks for a client certificate from a CA that is not the endpoint's, closing the connection unanswered when it gets another",
    correctClient:
      'report the request as failed (an empty reply: the connection closed without a response), not as a success, and not retry it endlessly',
  },
};

/** The Node TLS options of one bad listener, from the endpoint's normal material and the test-servers files. */
export function testListenerOptions(
  kind: TestListenerKind,
  normal: TlsMaterial['options'],
  files: Readonly<Record<string, string>>,
): TlsOptions {
  const base: TlsOptions = {
    minVersion: 'TLSv1.2',
    ciphers: normal.ciphers,
    ecdhCurve: normal.ecdhCurve,
    ALPNProtocols: ['http/1.1'],
  };
  const file = (name: string) => {
    const text = files[name];
    if (!text) throw new Error(`${name} is missing from the test-servers folder`);
    return text;
  };
  switch (kind) {
    case 'ExpiredCertificate':
      return { ...base, cert: file(TEST_SERVER_FILES.expiredCert), key: file(TEST_SERVER_FILES.expiredKey) };
    case 'UntrustedCA':
      return { ...base, cert: file(TEST_SERVER_FILES.untrustedCert), key: file(TEST_SERVER_FILES.untrustedKey) };
    case 'WrongHost':
      return { ...base, cert: file(TEST_SERVER_FILES.wrongHostCert), key: file(TEST_SERVER_FILES.wrongHostKey) };
    case 'TLS12Only':
      return { ...base, cert: normal.cert, key: normal.key, maxVersion: 'TLSv1.2' };
    case 'TLS13Only':
      return { ...base, cert: normal.cert, key: normal.key, minVersion: 'TLSv1.3' };
    case 'ClientCAMismatch':
      // Node verifies a client certificate only after the handshake (a refusal there is a reset, racing the
      // client's first bytes): the listener checks it itself and closes cleanly, so every client sees the same.
      return {
        ...base,
        cert: normal.cert,
        key: normal.key,
        ca: file(TEST_SERVER_FILES.foreignCa),
        requestCert: true,
        rejectUnauthorized: false,
      };
  }
}

/** The HTTP answer to a client that got through a bad listener's handshake. */
export function testListenerAnswer(kind: TestListenerKind): string {
  const { serves, correctClient } = TEST_LISTENER_BEHAVIOUR[kind];
  const body =
    `mtls-operator test listener ${kind}: this server offers ${serves}.\n` +
    `A correct client must ${correctClient}, and would not have got this far.\n`;
  return (
    'HTTP/1.1 421 Misdirected Request\r\n' +
    'Content-Type: text/plain; charset=utf-8\r\n' +
    `Content-Length: ${Buffer.byteLength(body)}\r\n` +
    `X-Mtls-Test-Listener: ${kind}\r\n` +
    'Connection: close\r\n\r\n' +
    body
  );
}

/** Reads the test-servers folder (small files on a tmpfs, read at start and on change). Missing files are absent. */
export function readTestServerFiles(dir: string): Record<string, string> {
  const files: Record<string, string> = {};
  for (const name of Object.values(TEST_SERVER_FILES)) {
    try {
      files[name] = readFileSync(join(dir, name), 'utf8');
    } catch {
      // absent: only the listeners that need it fail, naming it
    }
  }
  return files;
}

export interface RunningTestListeners {
  /** Bound port of each --test-listen, in order. */
  ports: number[];
  /** Builds every context again from the normal material given and the folder as it is now. */
  reload(normal: TlsMaterial): void;
  stop(): Promise<void>;
}

/** Starts the --test-listen listeners on 0.0.0.0 (their ports are the NetworkPolicy's and the pod's). */
export async function startTestListeners(
  config: Pick<ResolvedSidecarConfig, 'testListen' | 'testTlsDir' | 'handshakeTimeoutMs'>,
  normal: TlsMaterial,
  log: Logger,
  options: { reusePort?: boolean } = {},
): Promise<RunningTestListeners> {
  if (!config.testListen.length || !config.testTlsDir)
    return { ports: [], reload: () => undefined, stop: async () => {} };
  const dir = config.testTlsDir;
  const files = readTestServerFiles(dir);
  /** What the contexts were last built from: a poll that finds the same files changes nothing. */
  let builtFrom = inputsOf(normal, files);
  const sockets = new Set<Socket>();
  const servers = config.testListen.map((listener) => serve(listener, normal.options, files));

  function serve(listener: TestListener, normalOptions: TlsMaterial['options'], current: Record<string, string>) {
    const { kind } = listener;
    let server: Server;
    try {
      server = createServer({
        ...testListenerOptions(kind, normalOptions, current),
        handshakeTimeout: config.handshakeTimeoutMs,
      });
    } catch (err) {
      throw new Error(`--test-listen ${kind}=${listener.port} (--test-tls-dir ${dir}): ${errorMessage(err)}`);
    }
    const port = () => (server.address() as AddressInfo | null)?.port ?? listener.port;
    server.on('connection', (socket: Socket) => {
      sockets.add(socket);
      socket.once('close', () => sockets.delete(socket));
    });
    server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) => {
      log.info('test listener: the handshake failed, as a correct client makes it', {
        testListener: kind,
        port: port(),
        peer: socket.remoteAddress,
        error: err.code ?? err.message,
      });
    });
    server.on('secureConnection', (socket: TLSSocket) => {
      socket.on('error', () => undefined);
      socket.setTimeout(config.handshakeTimeoutMs, () => socket.destroy());
      if (kind === 'ClientCAMismatch' && !socket.authorized) {
        log.info('test listener: closed a connection whose client certificate is not from the CA asked for', {
          testListener: kind,
          port: port(),
          peer: socket.remoteAddress,
          error: socket.authorizationError ?? 'no client certificate',
        });
        // Read what the client sends (closing with unread bytes would be a reset), send close_notify and FIN.
        socket.resume();
        socket.end();
        return;
      }
      log.warn('test listener: a client completed the handshake with a server it should refuse', {
        testListener: kind,
        port: port(),
        peer: socket.remoteAddress,
        protocol: socket.getProtocol(),
      });
      // Answered on the client's first bytes (its request), never forwarded.
      socket.once('data', () => socket.end(testListenerAnswer(kind)));
    });
    return server;
  }

  const ports = await listenAll(
    servers,
    config.testListen.map((l) => l.port),
    options.reusePort,
  );
  // The bad certificates change only when the operator re-issues one; the normal material is the latest given.
  let latest = normal;
  const stopWatching = watchTlsDir(dir, () => rebuild(latest), 30_000);
  log.info('test listeners serving: they misbehave on purpose and never reach the upstream', {
    testListeners: config.testListen.map((l, i) => `${l.kind}=${ports[i]}`),
  });
  return {
    ports,
    reload: rebuild,
    async stop() {
      stopWatching();
      const closed = servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve())));
      for (const socket of sockets) socket.destroy();
      await Promise.all(closed);
    },
  };

  function rebuild(next: TlsMaterial): void {
    latest = next;
    const current = readTestServerFiles(dir);
    const inputs = inputsOf(next, current);
    if (inputs === builtFrom) return;
    builtFrom = inputs;
    for (const [i, server] of servers.entries()) {
      const { kind } = config.testListen[i]!;
      try {
        server.setSecureContext(testListenerOptions(kind, next.options, current));
      } catch (err) {
        log.error('test listener: the new files cannot be used; still serving the previous ones', {
          testListener: kind,
          error: errorMessage(err),
        });
      }
    }
  }
}

function inputsOf(normal: TlsMaterial, files: Readonly<Record<string, string>>): string {
  const hash = createHash('sha256').update(normal.digest);
  for (const name of Object.values(TEST_SERVER_FILES)) hash.update('\0').update(files[name] ?? '');
  return hash.digest('hex');
}
