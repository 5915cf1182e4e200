import type { Agent } from 'node:http';
import { type IncomingHttpHeaders, type IncomingMessage, request as httpRequest, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server } from 'node:https';
import { type AddressInfo, connect, type Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Duplex } from 'node:stream';
import type { Logger } from '../operator/log.ts';
import type { Listener, ResolvedSidecarConfig } from './flags.ts';
import type { SidecarMetrics } from './metrics.ts';
import type { RefusalLog } from './refusal-log.ts';
import type { TlsMaterial } from './tls-material.ts';
import { type ClientIdentity, verifyClient, xfcc } from './verify.ts';

/** Headers that describe one hop and are never forwarded (RFC 9110 7.6.1), plus the identity headers that
 * only the sidecar may set. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'proxy-authorization',
  'proxy-authenticate',
]);
const IDENTITY = new Set(['x-forwarded-client-cert', 'x-client-verify']);

const identities = new WeakMap<Socket, ClientIdentity>();
/** Connections that passed their listener's mode check; only these are ever forwarded. */
const accepted = new WeakSet<Socket>();

export interface ListenerServer {
  listener: Listener;
  server: Server;
  port: number;
}

/**
 * One TLS listener: terminates TLS with the listener's mode, then forwards HTTP/1.1 to the upstream over a
 * pooled keep-alive agent. A refused client is cut right after the handshake (with TLS 1.3 a client sees
 * that after its own handshake completed); a request gets 502 when the upstream is down and 504 when it
 * does not start answering in time.
 */
export function createListener(
  listener: Listener,
  config: ResolvedSidecarConfig,
  tls: TlsMaterial,
  deps: { log: Logger; refusals: RefusalLog; metrics: SidecarMetrics; agent: Agent },
): Server {
  const { mode } = listener;
  const asksForCert = mode !== 'standard';
  const server = createHttpsServer(
    {
      ...tls.options,
      requestCert: asksForCert,
      rejectUnauthorized: false,
      handshakeTimeout: config.handshakeTimeoutMs,
      maxHeaderSize: config.maxHeaderBytes,
      keepAliveTimeout: config.idleTimeoutMs,
      headersTimeout: config.headersTimeoutMs,
      requestTimeout: config.requestTimeoutMs,
      // How often Node checks those timeouts (default 30 s, which would let a slow client stay that long).
      connectionsCheckingInterval: Math.min(1_000, config.headersTimeoutMs / 2),
    },
    (req, res) => forward(req, res),
  );
  server.maxConnections = config.maxConnections;
  const boundPort = () => (server.address() as AddressInfo | null)?.port ?? listener.port;
  server.keepAliveTimeout = config.idleTimeoutMs;

  // Prepended, so it runs before the HTTP layer attaches its parser: a refused client's request (which a
  // TLS 1.3 client sends right behind its Finished) must never be parsed, let alone forwarded.
  server.prependListener('secureConnection', (socket: TLSSocket) => {
    const verdict = verifyClient(socket, mode, config.allowClients);
    if (!verdict.accept) {
      deps.metrics.handshakes.inc({ mode, result: verdict.reason });
      deps.refusals.refuse({
        listener: boundPort(),
        mode,
        reason: verdict.reason,
        peer: `${socket.remoteAddress}:${socket.remotePort}`,
        detail: verdict.detail,
        subject: verdict.subject,
        serial: verdict.serial,
      });
      socket.destroy();
      return;
    }
    deps.metrics.handshakes.inc({ mode, result: 'success' });
    accepted.add(socket);
    if (verdict.identity) identities.set(socket, verdict.identity);
  });
  server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) => {
    const reason = /certificate required|peer did not return a certificate/i.test(err.message)
      ? 'no_certificate'
      : 'protocol';
    deps.metrics.handshakes.inc({ mode, result: reason });
    deps.refusals.refuse({
      listener: boundPort(),
      mode,
      reason,
      peer: `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`,
      detail: err.code ?? err.message,
    });
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    // Malformed HTTP, oversized headers, header timeouts: answer like nginx and close.
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
    deps.metrics.requests.inc({ mode, code: String(status) });
    if (socket.writable)
      socket.end(
        `HTTP/1.1 ${status} ${status === 431 ? 'Request Header Fields Too Large' : status === 408 ? 'Request Timeout' : 'Bad Request'}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`,
      );
    else socket.destroy();
  });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => tunnel(req, socket as TLSSocket, head));

  function upstreamHeaders(req: IncomingMessage): Record<string, string | string[]> {
    const headers: Record<string, string | string[]> = {};
    const connectionTokens = new Set(
      String(req.headers.connection ?? '')
        .toLowerCase()
        .split(',')
        .map((t) => t.trim()),
    );
    for (const [name, value] of Object.entries(req.headers as IncomingHttpHeaders)) {
      if (value === undefined || HOP_BY_HOP.has(name) || IDENTITY.has(name) || connectionTokens.has(name)) continue;
      headers[name] = value;
    }
    const socket = req.socket as TLSSocket;
    const identity = identities.get(socket);
    if (identity) headers['x-forwarded-client-cert'] = xfcc(identity);
    headers['x-client-verify'] = identity ? 'SUCCESS' : 'NONE';
    headers['x-forwarded-proto'] = 'https';
    const peer = socket.remoteAddress ?? '';
    const prior = req.headers['x-forwarded-for'];
    headers['x-forwarded-for'] = prior ? `${prior}, ${peer}` : peer;
    return headers;
  }

  function forward(req: IncomingMessage, res: ServerResponse): void {
    if (!accepted.has(req.socket)) return void req.socket.destroy(); // defence in depth: never unverified
    const started = process.hrtime.bigint();
    let answered = false;
    const done = (code: number) => {
      deps.metrics.requests.inc({ mode, code: String(code) });
      deps.metrics.duration.observe({ mode }, Number(process.hrtime.bigint() - started) / 1e9);
    };
    const fail = (status: 502 | 504, why: string) => {
      if (answered) return void res.destroy();
      answered = true;
      deps.log.warn(status === 502 ? 'upstream unavailable' : 'upstream timed out', {
        listener: boundPort(),
        mode,
        upstream: config.upstream,
        method: req.method,
        path: req.url,
        status,
        error: why,
      });
      res.writeHead(status, { 'content-type': 'text/plain', connection: 'close' });
      res.end(status === 502 ? 'upstream unavailable\n' : 'upstream timed out\n');
      done(status);
    };
    const upstream = httpRequest(
      {
        host: config.upstreamHost,
        port: config.upstreamPort,
        method: req.method,
        path: req.url,
        headers: upstreamHeaders(req),
        agent: deps.agent,
      },
      (upstreamRes) => {
        clearTimeout(timer);
        answered = true;
        const headers: Record<string, string | string[]> = {};
        for (const [name, value] of Object.entries(upstreamRes.headers)) {
          if (value !== undefined && !HOP_BY_HOP.has(name)) headers[name] = value;
        }
        res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.statusMessage, headers);
        upstreamRes.pipe(res);
        upstreamRes.on('end', () => done(upstreamRes.statusCode ?? 502));
        upstreamRes.on('error', () => res.destroy());
      },
    );
    const timer = setTimeout(() => {
      fail(504, `no response within ${config.upstreamTimeoutMs} ms`);
      upstream.destroy();
    }, config.upstreamTimeoutMs);
    upstream.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      fail(502, err.code ?? err.message);
    });
    req.pipe(upstream);
    res.on('close', () => {
      clearTimeout(timer);
      if (!res.writableFinished) upstream.destroy();
    });
  }

  /** WebSocket and other upgrades: a raw tunnel after the rewritten request head. */
  function tunnel(req: IncomingMessage, socket: TLSSocket, head: Buffer): void {
    if (!accepted.has(socket)) return void socket.destroy();
    const upstream = connect(config.upstreamPort, config.upstreamHost);
    upstream.on('connect', () => {
      const headers = upstreamHeaders(req);
      const lines = [`${req.method} ${req.url} HTTP/1.1`, 'connection: upgrade', `upgrade: ${req.headers.upgrade}`];
      for (const [name, value] of Object.entries(headers)) {
        for (const v of Array.isArray(value) ? value : [value]) lines.push(`${name}: ${v}`);
      }
      upstream.write(lines.join('\r\n') + '\r\n\r\n');
      if (head.length) upstream.write(head);
      upstream.pipe(socket).pipe(upstream);
    });
    upstream.on('error', (err: NodeJS.ErrnoException) => {
      deps.log.warn('upstream unavailable', {
        listener: boundPort(),
        mode,
        upstream: config.upstream,
        status: 502,
        error: err.code,
      });
      if (socket.writable) socket.end('HTTP/1.1 502 Bad Gateway\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
    });
    socket.on('error', () => upstream.destroy());
    socket.on('close', () => upstream.destroy());
  }

  return server;
}
