import { connect, type Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Logger } from './log.ts';
import type { Mode, ResolvedSidecarConfig } from './flags.ts';
import {
  bareLineBreak,
  BODY_NONE,
  BODY_UNTIL_CLOSE,
  type BodyFraming,
  bodyFraming,
  CRLFCRLF,
  errorResponse,
  HttpError,
  parseRequestHeadBytes,
  parseResponseHeadBytes,
  type RequestHead,
  upstreamHeadBytes,
} from './http1.ts';
import type { SidecarMetrics } from './metrics.ts';
import type { RefusalLog } from './refusal-log.ts';

/**
 * The forwarding path: one verified TLS connection relayed to the upstream over a plain TCP connection of
 * its own (opened on the first request, kept alive as long as both sides keep theirs). Request heads are
 * parsed by hand and rewritten (identity headers); bodies and responses travel as raw bytes, parsed only
 * as far as their framing, so keep-alive, pipelining, 502/504 and streaming stay correct without Node's
 * HTTP machinery (`http.request` per request reaches a fraction of the throughput).
 */

/** What the forwarding path needs of the sidecar's config, plus the listener it serves and its outlets. */
export type ForwardSettings = Pick<
  ResolvedSidecarConfig,
  | 'upstreamHost'
  | 'upstreamPort'
  | 'upstream'
  | 'headersTimeoutMs'
  | 'requestTimeoutMs'
  | 'idleTimeoutMs'
  | 'upstreamTimeoutMs'
  | 'maxHeaderBytes'
> & {
  mode: Mode;
  /** The listener's bound port, for log lines. */
  listener: () => number;
  log: Logger;
  refusals: RefusalLog;
  metrics: SidecarMetrics;
};

/** Per-listener values computed once (label children of the metrics, so a request does no label lookup). */
export class ForwardContext {
  readonly settings: ForwardSettings;
  readonly connections = new Set<ProxyConnection>();
  private readonly codes = new Map<number, { inc(): void }>();
  readonly duration: { observe(value: number): void };
  /** Pipelined bytes held while a response is in flight, at most (then the client is paused). */
  readonly maxPending: number;

  constructor(settings: ForwardSettings) {
    this.settings = settings;
    this.duration = settings.metrics.duration.labels({ mode: settings.mode });
    this.maxPending = settings.maxHeaderBytes + 64 * 1024;
  }

  countRequest(status: number, startedAt: number): void {
    let counter = this.codes.get(status);
    if (!counter) {
      counter = this.settings.metrics.requests.labels({ mode: this.settings.mode, code: String(status) });
      this.codes.set(status, counter);
    }
    counter.inc();
    if (startedAt > 0) this.duration.observe((performance.now() - startedAt) / 1000);
  }
}

// Request side: how far the connection has read the client's current request.
const REQ_IDLE = 0; // between requests: nothing received yet
const REQ_HEAD = 1; // part of a request head buffered
const REQ_BODY = 2; // forwarding the request body
const REQ_SENT = 3; // the whole request went upstream
const REQ_TUNNEL = 4; // after 101 Switching Protocols: raw bytes both ways
const REQ_CLOSED = 5;
type RequestPhase =
  typeof REQ_IDLE | typeof REQ_HEAD | typeof REQ_BODY | typeof REQ_SENT | typeof REQ_TUNNEL | typeof REQ_CLOSED;

// Response side, per exchange (no exchange: no request outstanding).
const RES_HEAD = 1; // waiting for (the rest of) the response head
const RES_BODY = 2; // relaying the body
const RES_DONE = 3; // complete, while the request body is still arriving
type ResponsePhase = typeof RES_HEAD | typeof RES_BODY | typeof RES_DONE;

// What the deadline means when it passes.
const DL_NONE = 0;
const DL_IDLE = 1;
const DL_HEAD = 2;
const DL_REQUEST = 3;
const DL_UPSTREAM = 4;
const DL_CLOSING = 5;
type DeadlineKind =
  typeof DL_NONE | typeof DL_IDLE | typeof DL_HEAD | typeof DL_REQUEST | typeof DL_UPSTREAM | typeof DL_CLOSING;

// Why the client's socket is paused (a bit set of these).
const PAUSE_BACKPRESSURE = 1;
const PAUSE_PENDING = 2;
type PauseReason = typeof PAUSE_BACKPRESSURE | typeof PAUSE_PENDING;

const MAX_RESPONSE_HEAD = 64 * 1024;
/** Methods a proxy may send again after the upstream dropped the connection under them (RFC 9110 9.2.2). */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

/**
 * Every upstream socket reads into this one buffer (net's `onread`): the default path allocates a fresh
 * 64 KiB buffer per read, which cost ~3 µs of a ~35 µs request. Safe to share because the callback runs
 * synchronously and whatever outlives it (bytes for the client, a partial response head) is copied.
 */
const UPSTREAM_READ_BUFFER = Buffer.allocUnsafe(64 * 1024);
/** How long a connection the sidecar has ended may take to close its side before it is destroyed. */
export const CLOSE_GRACE_MS = 5_000;

/**
 * A state the forwarding path assumed and found otherwise: a bug here, never a client's fault. Asserted at the
 * state transitions (as undici's HTTP/1 client does); the connection is cut, the process goes on serving.
 */
class InvariantError extends Error {}

function invariant(holds: boolean, what: string): asserts holds {
  if (!holds) throw new InvariantError(what);
}

/**
 * One request and its response, from the parsed request head until both have been forwarded: everything that
 * belongs to one request lives here, so the next request starts from a new object and nothing is reset by hand.
 */
class Exchange {
  readonly method: string;
  readonly target: string;
  /** The client asked for an upgrade (WebSocket): a 101 may answer it. */
  readonly upgrade: boolean;
  readonly keepAlive: boolean;
  readonly startedAt = performance.now();
  /** What is still to come of the request body. */
  readonly request: BodyFraming;
  /** The head sent upstream, kept for one retry on a fresh connection (idempotent body-less requests only). */
  readonly retryHead: Buffer | null;
  retried = false;
  response: ResponsePhase = RES_HEAD;
  /** The first part of a response head split across reads (a copy). */
  partialHead: Buffer | null = null;
  /** The response body's framing, once its head is read. */
  responseBody: BodyFraming | null = null;
  status = 0;
  /** Bytes of the response reached the client (after that, an error can only cut the connection). */
  started = false;
  /** The upstream closes its connection after this response. */
  upstreamCloses = false;

  constructor(head: RequestHead, sent: Buffer) {
    this.method = head.method;
    this.target = head.target;
    this.upgrade = head.upgrade;
    this.keepAlive = head.keepAlive;
    this.request = bodyFraming(head.body, head.length);
    // A POST the upstream dropped the connection under may already have taken effect: never sent twice.
    this.retryHead = head.body === BODY_NONE && IDEMPOTENT.has(head.method) ? sent : null;
  }
}

export class ProxyConnection {
  private readonly client: TLSSocket;
  private readonly ctx: ForwardContext;
  /** X-Client-Verify, X-Forwarded-Client-Cert and X-Forwarded-Proto lines, fixed for the connection. */
  private readonly identity: string;
  /** The identity lines plus X-Forwarded-For for a client that sent none of its own (the usual case). */
  private readonly identityBlock: Buffer;
  private readonly peer: string;
  private upstream: Socket | null = null;
  /** The upstream connection has already carried a response (a request on it may meet a stale close). */
  private upstreamReused = false;
  private upstreamError = '';

  private req: RequestPhase = REQ_IDLE;
  /** The request in flight and its response; null between requests. */
  private exchange: Exchange | null = null;
  /** The last request started, for log lines written after it ended. */
  private lastExchange: Exchange | null = null;
  /** Client bytes held: an incomplete head, or pipelined bytes while a response is in flight. */
  private pending: Buffer | null = null;
  private paused = 0;
  private anyBytes = false;
  private clientEnded = false;
  /** Close the connection once the exchange in flight is over. */
  private closeAfter = false;

  deadline = 0;
  private deadlineKind: DeadlineKind = DL_NONE;
  /** Set while the client is not taking what is written to it: it must drain by then, or it is cut off. */
  writeDeadline = 0;

  constructor(client: TLSSocket, ctx: ForwardContext, identity: string) {
    this.client = client;
    this.ctx = ctx;
    this.identity = identity;
    this.identityBlock = Buffer.from(`${identity}x-forwarded-for: ${client.remoteAddress ?? ''}\r\n`, 'latin1');
    this.peer = client.remoteAddress ?? '';
    ctx.connections.add(this);
    // The first request must arrive within the headers timeout (a silent connection is not idle keep-alive).
    this.setDeadline(ctx.settings.headersTimeoutMs, DL_HEAD);
    client.on('data', (chunk: Buffer) => {
      try {
        this.onClientData(chunk);
      } catch (err) {
        this.broken(err);
      }
    });
    client.on('end', () => this.onClientEnd());
    client.on('error', () => undefined); // 'close' follows
    client.on('close', () => this.onClientClose());
  }

  private setDeadline(ms: number, kind: DeadlineKind): void {
    this.deadline = Date.now() + ms;
    this.deadlineKind = kind;
  }

  private clearDeadline(): void {
    this.deadline = 0;
    this.deadlineKind = DL_NONE;
  }

  /** Called by the sweeper once the deadline has passed. */
  expire(): void {
    if (this.writeDeadline !== 0 && this.writeDeadline <= Date.now()) {
      this.ctx.settings.log.warn('client stopped reading; connection closed', this.logFields(0));
      return this.destroy();
    }
    const kind = this.deadlineKind;
    this.clearDeadline();
    switch (kind) {
      case DL_IDLE:
        return this.closeClient();
      case DL_HEAD:
        // A connection that never sent a byte is closed quietly; a slow head gets 408.
        if (!this.anyBytes) return this.destroy();
        return this.reject(new HttpError(408, 'request head not received within the headers timeout'));
      case DL_REQUEST:
        return this.reject(new HttpError(408, 'request body not received within the request timeout'));
      case DL_UPSTREAM:
        return this.fail(504, `no response within ${this.ctx.settings.upstreamTimeoutMs} ms`);
      case DL_CLOSING:
        return this.destroy();
    }
  }

  /** A broken invariant: logged as the bug it is, and the connection cut. Other errors go on as before. */
  private broken(err: unknown): void {
    if (!(err instanceof InvariantError)) throw err;
    this.ctx.settings.log.error('forwarding state broken (a bug in the sidecar); connection closed', {
      ...this.logFields(0),
      error: err.message,
    });
    this.destroy();
  }

  // ---- client -> upstream ---------------------------------------------------------------------------

  private onClientData(chunk: Buffer): void {
    switch (this.req) {
      case REQ_IDLE:
      case REQ_HEAD:
        return this.readHead(chunk);
      case REQ_BODY:
        return this.forwardBody(chunk);
      case REQ_TUNNEL:
        return this.toUpstream(chunk);
      case REQ_SENT: {
        // Pipelined bytes (or early WebSocket frames): held until the response is complete.
        this.pending = this.pending ? Buffer.concat([this.pending, chunk]) : chunk;
        if (this.pending.length > this.ctx.maxPending) this.pause(PAUSE_PENDING);
        return;
      }
    }
  }

  private readHead(chunk: Buffer): void {
    this.anyBytes = true;
    let buf = chunk;
    let from = 0;
    if (this.pending) {
      from = Math.max(0, this.pending.length - 3);
      buf = Buffer.concat([this.pending, chunk]);
      this.pending = null;
    }
    if (this.req === REQ_IDLE) {
      // RFC 9112 2.2: ignore empty lines before a request line.
      let skip = 0;
      while (skip < buf.length && (buf[skip] === 13 || buf[skip] === 10)) skip++;
      if (skip === buf.length) return;
      if (skip) buf = buf.subarray(skip);
      this.req = REQ_HEAD;
      if (this.deadlineKind !== DL_HEAD) this.setDeadline(this.ctx.settings.headersTimeoutMs, DL_HEAD);
    }
    const end = buf.indexOf(CRLFCRLF, from);
    const max = this.ctx.settings.maxHeaderBytes;
    if (end < 0) {
      if (buf.length > max) return this.reject(new HttpError(431, `request head larger than ${max} bytes`));
      // Lines ending in a bare LF (or CR) never make a CRLFCRLF: refused now, not at the headers timeout.
      if (bareLineBreak(buf, from))
        return this.reject(new HttpError(400, 'bare LF or CR in the request head (lines must end with CRLF)'));
      this.pending = buf;
      return;
    }
    if (end + 4 > max) return this.reject(new HttpError(431, `request head larger than ${max} bytes`));
    let head;
    try {
      head = parseRequestHeadBytes(buf, 0, end);
    } catch (err) {
      return this.reject(err instanceof HttpError ? err : new HttpError(400, (err as Error).message));
    }
    const out = this.upstreamHead(buf, end, head);
    invariant(this.exchange === null, 'a request head arrived while another request was in flight');
    const exchange = new Exchange(head, out);
    this.exchange = exchange;
    this.lastExchange = exchange;
    const rest = end + 4 < buf.length ? buf.subarray(end + 4) : null;
    const upstream = this.ensureUpstream();
    if (head.body === BODY_NONE) {
      upstream.write(out);
      this.requestSent();
      if (rest) this.onClientData(rest);
      return;
    }
    this.req = REQ_BODY;
    this.setDeadline(this.ctx.settings.requestTimeoutMs, DL_REQUEST);
    if (!rest) return void upstream.write(out);
    // Head and the first body bytes in one write (one syscall).
    upstream.cork();
    upstream.write(out);
    this.forwardBody(rest);
    upstream.uncork();
  }

  /** The head sent upstream (see upstreamHeadBytes), with this connection's identity lines. */
  private upstreamHead(buf: Buffer, end: number, head: RequestHead): Buffer {
    const block = head.forwardedFor
      ? Buffer.from(`${this.identity}x-forwarded-for: ${head.forwardedFor}, ${this.peer}\r\n`, 'latin1')
      : this.identityBlock;
    return upstreamHeadBytes(buf, end, head, block);
  }

  /** Request body bytes: forwarded as its framing says (a chunked body re-serialised), up to its end. */
  private forwardBody(buf: Buffer): void {
    const exchange = this.exchange;
    invariant(exchange !== null && this.req === REQ_BODY, 'request body bytes outside a request body');
    const out: Buffer[] = [];
    let end: number;
    try {
      end = exchange.request.end(buf, 0, out);
    } catch (err) {
      return this.reject(err as HttpError);
    }
    const upstream = this.upstream;
    if (out.length > 1) upstream?.cork();
    for (const piece of out) this.toUpstream(piece);
    if (out.length > 1) upstream?.uncork();
    if (end < 0) return;
    this.requestSent();
    if (end < buf.length) this.onClientData(buf.subarray(end));
  }

  /** The whole request is upstream: wait for the response (or finish the cycle if it already came). */
  private requestSent(): void {
    const exchange = this.exchange;
    invariant(exchange !== null, 'a request was sent with no exchange');
    invariant(this.req === REQ_HEAD || this.req === REQ_BODY, 'a request was sent twice');
    this.req = REQ_SENT;
    if (exchange.response === RES_DONE) return this.completeCycle();
    if (exchange.response === RES_HEAD) this.setDeadline(this.ctx.settings.upstreamTimeoutMs, DL_UPSTREAM);
    else this.clearDeadline();
  }

  private toUpstream(buf: Buffer): void {
    const upstream = this.upstream;
    if (!upstream) return; // the upstream went away mid-body: the client gets its answer from that path
    if (!upstream.write(buf) && !(this.paused & PAUSE_BACKPRESSURE)) {
      this.pause(PAUSE_BACKPRESSURE);
      upstream.once('drain', () => this.resume(PAUSE_BACKPRESSURE));
    }
  }

  private pause(why: PauseReason): void {
    if (this.paused === 0) this.client.pause();
    this.paused |= why;
  }

  private resume(why: PauseReason): void {
    if (!(this.paused & why)) return;
    this.paused &= ~why;
    if (this.paused === 0 && this.req !== REQ_CLOSED) this.client.resume();
  }

  private onClientEnd(): void {
    switch (this.req) {
      case REQ_TUNNEL:
        return void this.upstream?.end();
      case REQ_SENT:
        // Half-closed after its request(s) (openssl s_client, scripts): answer what was sent, then close.
        this.clientEnded = true;
        return;
      case REQ_BODY:
        return this.destroy();
      default:
        return this.closeClient();
    }
  }

  private onClientClose(): void {
    this.req = REQ_CLOSED;
    this.ctx.connections.delete(this);
    this.upstream?.destroy();
    this.upstream = null;
  }

  // ---- upstream -> client ---------------------------------------------------------------------------

  private ensureUpstream(): Socket {
    if (this.upstream) return this.upstream;
    const { upstreamHost, upstreamPort } = this.ctx.settings;
    const upstream: Socket = connect({
      host: upstreamHost,
      port: upstreamPort,
      noDelay: true,
      onread: {
        buffer: UPSTREAM_READ_BUFFER,
        callback: (bytes: number, buf: Uint8Array) => {
          if (upstream !== this.upstream) return true;
          try {
            this.onUpstreamData(Buffer.from(buf.buffer, buf.byteOffset, bytes));
          } catch (err) {
            this.broken(err);
          }
          return true; // keep reading (pausing is done with pause()/resume())
        },
      },
    });
    this.upstream = upstream;
    this.upstreamReused = false;
    this.upstreamError = '';
    upstream.on('error', (err: NodeJS.ErrnoException) => {
      if (upstream === this.upstream) this.upstreamError = err.code ?? err.message;
    });
    upstream.on('end', () => {
      if (upstream === this.upstream && this.req === REQ_TUNNEL) this.client.end();
    });
    upstream.on('close', () => {
      if (upstream !== this.upstream) return;
      try {
        this.onUpstreamClose();
      } catch (err) {
        this.broken(err);
      }
    });
    return upstream;
  }

  private onUpstreamData(chunk: Buffer): void {
    if (this.req === REQ_TUNNEL) return this.toClient(chunk);
    const exchange = this.exchange;
    if (!exchange) return this.unexpectedBytes();
    let buf = chunk;
    let at = 0;
    while (exchange.response === RES_HEAD) {
      if (exchange.partialHead) {
        buf = Buffer.concat([exchange.partialHead, buf.subarray(at)]);
        at = 0;
        exchange.partialHead = null;
      }
      const end = buf.indexOf(CRLFCRLF, at);
      if (end < 0) {
        if (buf.length - at > MAX_RESPONSE_HEAD) return this.fail(502, 'response head too large');
        exchange.partialHead = Buffer.from(buf.subarray(at)); // a copy: `buf` may be the shared read buffer
        return;
      }
      let head;
      try {
        head = parseResponseHeadBytes(buf, at, end, exchange.method);
      } catch (err) {
        return this.fail(502, (err as Error).message);
      }
      const headEnd = end + 4;
      if (head.status === 101) {
        if (!exchange.upgrade) return this.fail(502, '101 Switching Protocols without an upgrade request');
        return this.startTunnel(exchange, buf, at);
      }
      if (head.status < 200) {
        // 100 Continue, 103 Early Hints: relay, then read the final response.
        this.toClient(buf.subarray(at, headEnd));
        at = headEnd;
        continue;
      }
      exchange.status = head.status;
      exchange.responseBody = bodyFraming(head.body, head.length);
      exchange.upstreamCloses = head.close;
      exchange.response = RES_BODY;
      exchange.started = true;
      if (this.deadlineKind === DL_UPSTREAM) this.clearDeadline();
      if (head.body === BODY_NONE) {
        this.toClient(at === 0 && headEnd === buf.length ? buf : buf.subarray(at, headEnd));
        this.responseDone();
        if (headEnd < buf.length) this.unexpectedBytes();
        return;
      }
      return this.relayBody(exchange, buf, at, headEnd);
    }
    if (exchange.response === RES_BODY) return this.relayBody(exchange, buf, at, at);
    this.unexpectedBytes();
  }

  /** Relays buf[from..] to the client, where the body starts at `bodyAt`; finds the end of the response. */
  private relayBody(exchange: Exchange, buf: Buffer, from: number, bodyAt: number): void {
    invariant(exchange.responseBody !== null, 'a response body before its head');
    let end: number;
    try {
      end = exchange.responseBody.end(buf, bodyAt);
    } catch (err) {
      return this.fail(502, `bad chunked response: ${(err as Error).message}`);
    }
    if (end < 0) return this.toClient(from === 0 ? buf : buf.subarray(from));
    this.toClient(from === 0 && end === buf.length ? buf : buf.subarray(from, end));
    this.responseDone();
    if (end < buf.length) this.unexpectedBytes();
  }

  /** The upstream sent bytes nobody asked for: its connection can no longer be trusted to stay in step. */
  private unexpectedBytes(): void {
    const upstream = this.upstream;
    this.upstream = null;
    upstream?.destroy();
    if (this.exchange && this.exchange.response !== RES_DONE) this.closeAfter = true;
  }

  /** Writes upstream bytes to the client. `buf` may be the shared read buffer: what is written is a copy. */
  private toClient(buf: Buffer): void {
    if (this.req === REQ_CLOSED) return;
    const upstream = this.upstream;
    if (!this.client.write(Buffer.from(buf)) && upstream && !upstream.isPaused()) {
      upstream.pause();
      // Nothing else times out while a response is relayed: a client that stops reading would hold this
      // connection, and the upstream connection behind it, forever.
      if (this.writeDeadline === 0) this.writeDeadline = Date.now() + this.ctx.settings.idleTimeoutMs;
      this.client.once('drain', () => {
        this.writeDeadline = 0;
        upstream.resume();
      });
    }
  }

  private responseDone(): void {
    const exchange = this.exchange;
    invariant(exchange !== null && exchange.response === RES_BODY, 'a response ended that was not being relayed');
    this.ctx.countRequest(exchange.status, exchange.startedAt);
    exchange.response = RES_DONE;
    this.upstreamReused = true;
    if (exchange.upstreamCloses) {
      const upstream = this.upstream;
      this.upstream = null;
      upstream?.end();
    }
    if (this.req === REQ_SENT) this.completeCycle();
    else this.closeAfter = true; // answered before the request body ended: finish receiving it, then close
  }

  /** Request and response both forwarded: the connection is ready for the next request (or closes). */
  private completeCycle(): void {
    const exchange = this.exchange;
    invariant(
      exchange !== null && exchange.response === RES_DONE && this.req === REQ_SENT,
      'a request cycle completed before its request and response did',
    );
    this.exchange = null;
    if (!exchange.keepAlive || this.closeAfter) return this.closeClient();
    this.req = REQ_IDLE;
    this.setDeadline(this.ctx.settings.idleTimeoutMs, DL_IDLE);
    const pending = this.pending;
    this.pending = null;
    this.resume(PAUSE_PENDING);
    if (pending) this.onClientData(pending);
    // A client that half-closed gets answers to the requests it sent, then the connection ends.
    if (this.clientEnded && (this.req === REQ_IDLE || this.req === REQ_HEAD)) this.closeClient();
  }

  private startTunnel(exchange: Exchange, buf: Buffer, at: number): void {
    invariant(exchange.upgrade && exchange === this.exchange, 'a tunnel without an upgrade request');
    this.ctx.countRequest(101, exchange.startedAt);
    this.req = REQ_TUNNEL;
    this.exchange = null;
    this.clearDeadline();
    this.toClient(at === 0 ? buf : buf.subarray(at));
    const pending = this.pending;
    this.pending = null;
    this.resume(PAUSE_PENDING);
    if (pending) this.toUpstream(pending);
  }

  private onUpstreamClose(): void {
    this.upstream = null;
    const reused = this.upstreamReused;
    if (this.req === REQ_CLOSED) return;
    if (this.req === REQ_TUNNEL) return this.closeClient();
    const exchange = this.exchange;
    // Idle: the next request opens a new connection.
    if (!exchange) return;
    if (exchange.response === RES_HEAD && !exchange.partialHead) {
      // Nothing of the response arrived. A kept-alive upstream connection may have been closed by the
      // upstream just as the request went out: retry a body-less request once on a fresh connection.
      if (reused && this.req === REQ_SENT && exchange.retryHead && !exchange.retried) {
        exchange.retried = true;
        this.ensureUpstream().write(exchange.retryHead);
        return;
      }
      return this.fail(502, this.upstreamError || 'the upstream closed the connection without a response');
    }
    if (exchange.response === RES_HEAD)
      return this.fail(502, 'the upstream closed the connection inside a response head');
    if (exchange.response === RES_BODY) {
      if (exchange.responseBody?.kind === BODY_UNTIL_CLOSE) {
        this.closeAfter = true;
        return this.responseDone();
      }
      // A response cut short: the client must see the connection end, not a silently short body.
      this.ctx.settings.log.warn('upstream closed the connection inside a response', this.logFields(0));
      return this.destroy();
    }
    // Answered in full before the client finished its request body: the client has what it needs.
    return this.closeClient();
  }

  // ---- endings --------------------------------------------------------------------------------------

  private logFields(status: number): Record<string, unknown> {
    const s = this.ctx.settings;
    return {
      listener: s.listener(),
      mode: s.mode,
      peer: `${this.peer}:${this.client.remotePort ?? '?'}`,
      upstream: s.upstream,
      method: this.lastExchange?.method ?? '',
      path: this.lastExchange?.target ?? '',
      ...(status ? { status } : {}),
    };
  }

  /** 502 / 504: the upstream failed this request. */
  private fail(status: 502 | 504, why: string): void {
    if (this.req === REQ_CLOSED) return;
    this.ctx.settings.log.warn(status === 502 ? 'upstream unavailable' : 'upstream timed out', {
      ...this.logFields(status),
      error: why,
    });
    this.ctx.countRequest(status, this.exchange?.startedAt ?? 0);
    const upstream = this.upstream;
    this.upstream = null;
    upstream?.destroy();
    if (this.exchange?.started) return this.destroy();
    this.answerAndClose(status, status === 502 ? 'upstream unavailable\n' : 'upstream timed out\n');
  }

  /** 400 / 408 / 431 / 405 / 505: the client's request is refused; logged like a refused handshake. */
  private reject(err: HttpError): void {
    if (this.req === REQ_CLOSED) return;
    const s = this.ctx.settings;
    s.refusals.refuse({
      listener: s.listener(),
      mode: s.mode,
      reason: 'protocol',
      peer: `${this.peer}:${this.client.remotePort ?? '?'}`,
      detail: `${err.status}: ${err.message}`,
    });
    this.ctx.countRequest(err.status, 0);
    const upstream = this.upstream;
    this.upstream = null;
    upstream?.destroy();
    if (this.exchange?.started) return this.destroy();
    this.answerAndClose(err.status, `${err.message}\n`);
  }

  private answerAndClose(status: number, body: string): void {
    this.exchange = null;
    this.pending = null;
    this.client.write(errorResponse(status, body), 'latin1');
    this.closeClient();
  }

  /** Ends the TLS connection politely; destroys it if the client does not close within a grace period. */
  private closeClient(): void {
    if (this.req === REQ_CLOSED) return;
    this.req = REQ_CLOSED;
    this.pending = null;
    const upstream = this.upstream;
    this.upstream = null;
    upstream?.destroy();
    this.client.end();
    this.setDeadline(CLOSE_GRACE_MS, DL_CLOSING);
  }

  destroy(): void {
    this.req = REQ_CLOSED;
    this.clearDeadline();
    this.upstream?.destroy();
    this.upstream = null;
    this.client.destroy();
    this.ctx.connections.delete(this);
  }

  /** Graceful shutdown: close now if idle, else after the response in flight. Tunnels stay until forced. */
  drain(): void {
    if (this.req === REQ_IDLE && !this.pending) return this.closeClient();
    if (this.req !== REQ_TUNNEL) this.closeAfter = true;
  }

  get idle(): boolean {
    return this.req === REQ_IDLE || this.req === REQ_CLOSED;
  }
}

/**
 * One timer for all connections of the sidecar: deadlines are checked every `intervalMs` instead of
 * arming a timer per request (deadlines are late by at most one interval).
 */
export function startSweeper(contexts: readonly ForwardContext[], intervalMs: number): () => void {
  const timer = setInterval(() => {
    const now = Date.now();
    for (const ctx of contexts) {
      for (const conn of ctx.connections) {
        if ((conn.deadline !== 0 && conn.deadline <= now) || (conn.writeDeadline !== 0 && conn.writeDeadline <= now))
          conn.expire();
      }
    }
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
