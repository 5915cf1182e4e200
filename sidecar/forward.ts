import { connect, type Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Logger } from './log.ts';
import type { Mode, ResolvedSidecarConfig } from './flags.ts';
import {
  bareLineBreak,
  BODY_CHUNKED,
  BODY_LENGTH,
  BODY_NONE,
  BODY_UNTIL_CLOSE,
  type BodyKind,
  ChunkedBody,
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

// Request side.
const REQ_IDLE = 0; // between requests: nothing received yet
const REQ_HEAD = 1; // part of a request head buffered
const REQ_BODY = 2; // forwarding the request body
const REQ_SENT = 3; // the whole request went upstream
const REQ_TUNNEL = 4; // after 101 Switching Protocols: raw bytes both ways
const REQ_CLOSED = 5;

// Response side.
const RES_NONE = 0; // no request outstanding
const RES_HEAD = 1; // waiting for (the rest of) the response head
const RES_BODY = 2; // relaying the body
const RES_DONE = 3; // complete, while the request body is still arriving

// What the deadline means when it passes.
const DL_NONE = 0;
const DL_IDLE = 1;
const DL_HEAD = 2;
const DL_REQUEST = 3;
const DL_UPSTREAM = 4;
const DL_CLOSING = 5;

const PAUSE_BACKPRESSURE = 1;
const PAUSE_PENDING = 2;

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
  private upstreamClosesAfter = false;

  private req = REQ_IDLE;
  private res = RES_NONE;
  private pending: Buffer | null = null;
  private paused = 0;
  private bodyLeft = 0;
  private reqChunked: ChunkedBody | null = null;
  private resHead: Buffer | null = null;
  private resBody: BodyKind = BODY_NONE;
  private resLeft = 0;
  private resChunked: ChunkedBody | null = null;
  /** Bytes of the current response reached the client (after that, an error can only cut the connection). */
  private resStarted = false;
  private status = 0;
  private method = '';
  private target = '';
  private upgrade = false;
  private keepAlive = true;
  private closeAfter = false;
  private startedAt = 0;
  /** The head sent for the current request, kept for one retry when a reused upstream closed under it. */
  private sentHead: Buffer | null = null;
  private retried = false;
  private anyBytes = false;
  private clientEnded = false;

  deadline = 0;
  private deadlineKind = DL_NONE;
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
    client.on('data', (chunk: Buffer) => this.onClientData(chunk));
    client.on('end', () => this.onClientEnd());
    client.on('error', () => undefined); // 'close' follows
    client.on('close', () => this.onClientClose());
  }

  private setDeadline(ms: number, kind: number): void {
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
    this.startedAt = performance.now();
    this.method = head.method;
    this.target = head.target;
    this.upgrade = head.upgrade;
    this.keepAlive = head.keepAlive;
    this.retried = false;
    this.resStarted = false;
    this.res = RES_HEAD;
    this.resHead = null;
    const out = this.upstreamHead(buf, end, head);
    const rest = end + 4 < buf.length ? buf.subarray(end + 4) : null;
    const upstream = this.ensureUpstream();
    if (head.body === BODY_NONE) {
      // Kept for one retry on a fresh upstream connection, for idempotent methods only: a POST the upstream
      // dropped the connection under may already have taken effect.
      this.sentHead = IDEMPOTENT.has(head.method) ? out : null;
      upstream.write(out);
      this.requestSent();
      if (rest) this.onClientData(rest);
      return;
    }
    this.sentHead = null;
    this.req = REQ_BODY;
    this.setDeadline(this.ctx.settings.requestTimeoutMs, DL_REQUEST);
    if (head.body === BODY_CHUNKED) {
      this.reqChunked = new ChunkedBody();
      this.bodyLeft = 0;
    } else {
      this.reqChunked = null;
      this.bodyLeft = head.length;
    }
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

  private forwardBody(buf: Buffer): void {
    let end: number;
    if (this.reqChunked) {
      // A chunked body goes on re-serialised (sizes re-written, extensions and trailers left out).
      const out: Buffer[] = [];
      try {
        end = this.reqChunked.feed(buf, 0, out);
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
      return;
    } else if (this.bodyLeft >= buf.length) {
      this.bodyLeft -= buf.length;
      end = this.bodyLeft === 0 ? buf.length : -1;
    } else {
      end = this.bodyLeft;
      this.bodyLeft = 0;
    }
    if (end < 0) return this.toUpstream(buf);
    if (end > 0) this.toUpstream(end === buf.length ? buf : buf.subarray(0, end));
    this.requestSent();
    if (end < buf.length) this.onClientData(buf.subarray(end));
  }

  /** The whole request is upstream: wait for the response (or finish the cycle if it already came). */
  private requestSent(): void {
    this.req = REQ_SENT;
    this.reqChunked = null;
    if (this.res === RES_DONE) return this.completeCycle();
    if (this.res === RES_HEAD) this.setDeadline(this.ctx.settings.upstreamTimeoutMs, DL_UPSTREAM);
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

  private pause(why: number): void {
    if (this.paused === 0) this.client.pause();
    this.paused |= why;
  }

  private resume(why: number): void {
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
          if (upstream === this.upstream) this.onUpstreamData(Buffer.from(buf.buffer, buf.byteOffset, bytes));
          return true; // keep reading (pausing is done with pause()/resume())
        },
      },
    });
    this.upstream = upstream;
    this.upstreamReused = false;
    this.upstreamError = '';
    this.upstreamClosesAfter = false;
    upstream.on('error', (err: NodeJS.ErrnoException) => {
      if (upstream === this.upstream) this.upstreamError = err.code ?? err.message;
    });
    upstream.on('end', () => {
      if (upstream === this.upstream && this.req === REQ_TUNNEL) this.client.end();
    });
    upstream.on('close', () => {
      if (upstream === this.upstream) this.onUpstreamClose();
    });
    return upstream;
  }

  private onUpstreamData(chunk: Buffer): void {
    if (this.req === REQ_TUNNEL) return this.toClient(chunk);
    let buf = chunk;
    let at = 0;
    while (this.res === RES_HEAD) {
      if (this.resHead) {
        buf = Buffer.concat([this.resHead, buf.subarray(at)]);
        at = 0;
        this.resHead = null;
      }
      const end = buf.indexOf(CRLFCRLF, at);
      if (end < 0) {
        if (buf.length - at > MAX_RESPONSE_HEAD) return this.fail(502, 'response head too large');
        this.resHead = Buffer.from(buf.subarray(at)); // a copy: `buf` may be the shared read buffer
        return;
      }
      let head;
      try {
        head = parseResponseHeadBytes(buf, at, end, this.method);
      } catch (err) {
        return this.fail(502, (err as Error).message);
      }
      const headEnd = end + 4;
      if (head.status === 101) {
        if (!this.upgrade) return this.fail(502, '101 Switching Protocols without an upgrade request');
        return this.startTunnel(buf, at);
      }
      if (head.status < 200) {
        // 100 Continue, 103 Early Hints: relay, then read the final response.
        this.toClient(buf.subarray(at, headEnd));
        at = headEnd;
        continue;
      }
      this.status = head.status;
      this.resBody = head.body;
      this.resLeft = head.length;
      this.resChunked = head.body === BODY_CHUNKED ? new ChunkedBody() : null;
      this.upstreamClosesAfter = head.close;
      this.res = RES_BODY;
      this.resStarted = true;
      if (this.deadlineKind === DL_UPSTREAM) this.clearDeadline();
      if (head.body === BODY_NONE) {
        this.toClient(at === 0 && headEnd === buf.length ? buf : buf.subarray(at, headEnd));
        this.responseDone();
        if (headEnd < buf.length) this.unexpectedBytes();
        return;
      }
      return this.relayBody(buf, at, headEnd);
    }
    if (this.res === RES_BODY) return this.relayBody(buf, at, at);
    this.unexpectedBytes();
  }

  /** Relays buf[from..] to the client, where the body starts at `bodyAt`; finds the end of the response. */
  private relayBody(buf: Buffer, from: number, bodyAt: number): void {
    let end = -1;
    if (this.resBody === BODY_LENGTH) {
      const available = buf.length - bodyAt;
      if (this.resLeft > available) this.resLeft -= available;
      else {
        end = bodyAt + this.resLeft;
        this.resLeft = 0;
      }
    } else if (this.resBody === BODY_CHUNKED) {
      try {
        end = this.resChunked!.feed(buf, bodyAt);
      } catch (err) {
        return this.fail(502, `bad chunked response: ${(err as Error).message}`);
      }
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
    if (this.res !== RES_NONE && this.res !== RES_DONE) this.closeAfter = true;
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
    this.ctx.countRequest(this.status, this.startedAt);
    this.res = RES_DONE;
    this.upstreamReused = true;
    this.resChunked = null;
    if (this.upstreamClosesAfter) {
      const upstream = this.upstream;
      this.upstream = null;
      upstream?.end();
    }
    if (this.req === REQ_SENT) this.completeCycle();
    else this.closeAfter = true; // answered before the request body ended: finish receiving it, then close
  }

  private completeCycle(): void {
    this.res = RES_NONE;
    // Nothing of the next response has reached the client: a refusal of the next request gets its answer.
    this.resStarted = false;
    if (!this.keepAlive || this.closeAfter) return this.closeClient();
    this.req = REQ_IDLE;
    this.setDeadline(this.ctx.settings.idleTimeoutMs, DL_IDLE);
    const pending = this.pending;
    this.pending = null;
    this.resume(PAUSE_PENDING);
    if (pending) this.onClientData(pending);
    // A client that half-closed gets answers to the requests it sent, then the connection ends.
    if (this.clientEnded && (this.req === REQ_IDLE || this.req === REQ_HEAD)) this.closeClient();
  }

  private startTunnel(buf: Buffer, at: number): void {
    this.ctx.countRequest(101, this.startedAt);
    this.req = REQ_TUNNEL;
    this.res = RES_NONE;
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
    if (this.res === RES_HEAD && !this.resHead) {
      // Nothing of the response arrived. A kept-alive upstream connection may have been closed by the
      // upstream just as the request went out: retry a body-less request once on a fresh connection.
      if (reused && this.req === REQ_SENT && this.sentHead && !this.retried) {
        this.retried = true;
        this.ensureUpstream().write(this.sentHead);
        return;
      }
      return this.fail(502, this.upstreamError || 'the upstream closed the connection without a response');
    }
    if (this.res === RES_HEAD) return this.fail(502, 'the upstream closed the connection inside a response head');
    if (this.res === RES_BODY) {
      if (this.resBody === BODY_UNTIL_CLOSE) {
        this.closeAfter = true;
        return this.responseDone();
      }
      // A response cut short: the client must see the connection end, not a silently short body.
      this.ctx.settings.log.warn('upstream closed the connection inside a response', this.logFields(0));
      return this.destroy();
    }
    // Answered in full before the client finished its request body: the client has what it needs.
    if (this.res === RES_DONE) return this.closeClient();
    if (this.req === REQ_BODY) return this.fail(502, this.upstreamError || 'the upstream closed the connection');
    // Idle: the next request opens a new connection.
  }

  // ---- endings --------------------------------------------------------------------------------------

  private logFields(status: number): Record<string, unknown> {
    const s = this.ctx.settings;
    return {
      listener: s.listener(),
      mode: s.mode,
      peer: `${this.peer}:${this.client.remotePort ?? '?'}`,
      upstream: s.upstream,
      method: this.method,
      path: this.target,
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
    this.ctx.countRequest(status, this.startedAt);
    const upstream = this.upstream;
    this.upstream = null;
    upstream?.destroy();
    if (this.resStarted) return this.destroy();
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
    if (this.resStarted) return this.destroy();
    this.answerAndClose(err.status, `${err.message}\n`);
  }

  private answerAndClose(status: number, body: string): void {
    this.res = RES_NONE;
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
