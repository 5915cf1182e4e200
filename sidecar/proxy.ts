import type { AddressInfo, Socket } from 'node:net';
import { createServer as createTlsServer, type Server, type TlsOptions, type TLSSocket } from 'node:tls';
import type { Logger } from './log.ts';
import type { Listener, ResolvedSidecarConfig } from './flags.ts';
import { CLOSE_GRACE_MS, ForwardContext, ProxyConnection } from './forward.ts';
import { Http2Front } from './http2.ts';
import { relayTcp } from './tcp-relay.ts';
import type { SidecarMetrics } from './metrics.ts';
import { answerRefused, refusalAnswer, refusalResponse } from './refusal-answer.ts';
import type { RefusalLog, RefusalReason } from './refusal-log.ts';
import type { TlsMaterial } from './tls-material.ts';
import type { UpstreamProtocolChoice } from './upstream-protocol.ts';
import { identityFields, verifyClient } from './verify.ts';

export interface TlsListener {
  server: Server;
  forward: ForwardContext;
  /** Connections whose client chose HTTP/2 (ALPN h2), and HTTP/1.1 ones whose requests go to an h2c upstream. */
  h2: Http2Front;
  /** Every open TCP connection, verified or still in its handshake (for a forced stop). */
  sockets: Set<Socket>;
}

/** Peer address of each raw connection, kept so a handshake that dies early can still be logged with it. */
// A property, not a WeakMap: thousands of short-lived connections as WeakMap keys make every scavenge slow.
const PEER = Symbol('peer');
type WithPeer = { [PEER]?: string };

/** The options of a listener's secure context (also used by the reload's setSecureContext). */
export function contextOptions(tls: TlsMaterial, listener: Listener): TlsOptions {
  return { ...tls.options, requestCert: listener.mode !== 'standard', rejectUnauthorized: false };
}

/**
 * One TLS listener: terminates TLS with the listener's mode and hands each verified connection to the
 * forwarding path: forward.ts for HTTP/1.1 to an HTTP/1.1 upstream, http2.ts for HTTP/2 and for HTTP/1.1 to an h2c
 * upstream (http1-to-h2c.ts). The mode check runs when the handshake completes, before any byte of the
 * connection is read: a refused client is answered 400 or 403 with the reason (refusal-answer.ts, which also
 * says why that is not a TLS alert) and never has a request forwarded.
 */
export function createListener(
  listener: Listener,
  config: ResolvedSidecarConfig,
  tls: TlsMaterial,
  deps: { log: Logger; refusals: RefusalLog; metrics: SidecarMetrics; protocolChoice: UpstreamProtocolChoice },
): TlsListener {
  const { mode } = listener;
  const tcp = listener.protocol === 'tcp';
  const server = createTlsServer({
    ...contextOptions(tls, listener),
    handshakeTimeout: config.handshakeTimeoutMs,
    // HTTP/2 first, as Envoy and nginx offer it; a client that offers no ALPN speaks HTTP/1.1. A TCP listener
    // offers none: what it relays is not the sidecar's to name.
    ...(tcp ? {} : { ALPNProtocols: ['h2', 'http/1.1'] }),
    // Half-open only once verified (below): a client that hangs up mid-handshake must close the socket.
    allowHalfOpen: false,
    noDelay: true,
    keepAlive: true,
    keepAliveInitialDelay: 60_000,
  });
  server.maxConnections = config.maxConnections;
  const boundPort = () => (server.address() as AddressInfo | null)?.port ?? listener.port;
  const forward = new ForwardContext({ ...config, ...deps, mode, listener: boundPort });
  const h2 = new Http2Front(forward, deps.protocolChoice);
  const sockets = new Set<Socket>();
  const success = deps.metrics.handshakes.labels({ mode, result: 'success' });
  const refused = (reason: RefusalReason) => deps.metrics.handshakes.labels({ mode, result: reason }).inc();

  /** The HTTP/1.1 raw relay (forward.ts) to an HTTP/1.1 upstream. */
  const relayHttp1 = (socket: TLSSocket, fields: [string, string][]) => {
    const identity = fields.map(([name, value]) => `${name}: ${value}\r\n`).join('');
    new ProxyConnection(socket, forward, identity);
  };

  server.on('connection', (raw: Socket) => {
    (raw as WithPeer)[PEER] = `${raw.remoteAddress}:${raw.remotePort}`;
    sockets.add(raw);
    raw.on('close', () => sockets.delete(raw));
  });
  server.on('secureConnection', (socket: TLSSocket) => {
    const verdict = verifyClient(socket, mode, config.allowClients);
    if (!verdict.accept) {
      refused(verdict.reason);
      deps.refusals.refuse({
        listener: boundPort(),
        mode,
        reason: verdict.reason,
        peer: `${socket.remoteAddress}:${socket.remotePort}`,
        detail: verdict.detail,
        subject: verdict.subject,
        serial: verdict.serial,
      });
      // A TCP client gets no HTTP answer: close_notify, and the reason in the log.
      if (tcp) {
        socket.on('error', () => socket.destroy());
        socket.setTimeout(CLOSE_GRACE_MS, () => socket.destroy());
        socket.end();
      } else if (socket.alpnProtocol === 'h2') h2.refuse(socket, { ...refusalAnswer(verdict), reason: verdict.reason });
      else answerRefused(socket, refusalResponse(verdict), config);
      return;
    }
    success.inc();
    if (tcp) return relayTcp(socket, verdict.identity, { ...config, ...deps, mode, listener: boundPort });
    const fields = identityFields(verdict.identity);
    if (socket.alpnProtocol === 'h2') return h2.serve(socket, fields);
    // A client may half-close after its request (openssl s_client, scripts) and still get the answer.
    socket.allowHalfOpen = true;
    // After the handshake Node does not destroy a TLS socket on a fatal TLS error (bad record MAC, a plaintext
    // record, an unexpected message): it only emits 'error', and the connection stayed open until its idle
    // timeout. Nothing can be read from it any more; close it now ('close' cleans up the forwarding state).
    socket.on('error', () => socket.destroy());
    const protocol = deps.protocolChoice.forStream();
    if (protocol === 'http1') return relayHttp1(socket, fields);
    // An h2c upstream cannot read HTTP/1.1: each request goes as a stream of the h2c connection instead.
    if (protocol === 'h2c') return h2.serveHttp1(socket, fields);
    // `auto` before the upstream's protocol is known: the connection waits, unread, for the probe in flight
    // (bounded by the probe timeout).
    socket.pause();
    void protocol.then((found) => {
      if (socket.destroyed) return;
      if (found === 'h2c') return h2.serveHttp1(socket, fields);
      relayHttp1(socket, fields);
      socket.resume();
    });
  });
  server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) => {
    const reason: RefusalReason = /certificate required|peer did not return a certificate/i.test(err.message)
      ? 'no_certificate'
      : 'protocol';
    refused(reason);
    const raw = (socket as unknown as { _parent?: object })._parent;
    deps.refusals.refuse({
      listener: boundPort(),
      mode,
      reason,
      peer:
        (raw as WithPeer | undefined)?.[PEER] ??
        (socket.remoteAddress ? `${socket.remoteAddress}:${socket.remotePort}` : 'unknown'),
      detail: err.code ?? err.message,
    });
    // With a tlsClientError listener Node leaves the connection to it: the handshake timeout and OpenSSL's
    // own errors (a garbled or SSLv2 hello, ...) would otherwise keep the TCP connection open until the client
    // leaves, so a handshake flood or a byte-a-second ClientHello pinned connections up to --max-connections.
    // OpenSSL's alert for the error (protocol_version, handshake_failure, decode_error, ...) is already on its
    // way: Node flushes it before it reports the error.
    socket.destroy();
  });
  return { server, forward, h2, sockets };
}
