import { connect as h2connect } from 'node:http2';
import type { StreamProtocol, UpstreamProtocol } from './flags.ts';
import type { Logger } from './log.ts';
import type { SidecarMetrics } from './metrics.ts';

/**
 * `--upstream-protocol auto`: which of http1 and h2c the upstream speaks, found by probing it, decided once and
 * kept for the life of the process. A probe is an h2c prior-knowledge connection made with node:http2's client:
 * an upstream that answers with its SETTINGS frame speaks h2c; one that answers anything else (an HTTP/1.1
 * 400/505, which nghttp2 reads as a protocol error) or closes the connection is taken as HTTP/1.1. An upstream
 * that is not listening yet (the app starts after its native sidecar) is "not known yet": probed again with
 * backoff, and streams go as HTTP/1.1 meanwhile. Envoy has no probe for cleartext upstreams; where it cannot tell
 * (`auto_config` without ALPN) it uses HTTP/1.1, and so does this where the probe cannot tell.
 */

/** What one probe saw: the facts the decision is made from. */
export type ProbeOutcome =
  | { connected: false; error: string }
  | { connected: true; answer: 'settings' | 'protocol-error' | 'closed' | 'silent'; detail?: string };

/** The verdict on one probe: a protocol, or "not known yet" (probe again later). */
export type ProbeVerdict = { detected: StreamProtocol; reason: string } | { detected: 'unknown'; reason: string };

/**
 * An upstream that accepts the connection but says nothing within the probe timeout may be a server still busy
 * starting: it gets this many probes in all before it is taken as HTTP/1.1 (an h2c server sends its SETTINGS
 * as soon as it reads the client preface).
 */
export const MAX_SILENT_PROBES = 3;
export const PROBE_TIMEOUT_MS = 2_000;
/** Backoff between probes of an upstream not known yet: doubling from the first to the last, then the last. */
export const PROBE_BACKOFF_MS = { first: 250, max: 30_000 };
/** A stream may bring the next probe forward, but not sooner than this after the last one ended. */
export const STREAM_PROBE_INTERVAL_MS = 1_000;

/** The verdict on a probe (pure); `silentBefore` counts earlier probes that were connected and got no answer. */
export function decideUpstreamProtocol(outcome: ProbeOutcome, silentBefore: number): ProbeVerdict {
  if (!outcome.connected) return { detected: 'unknown', reason: `upstream not reachable (${outcome.error})` };
  switch (outcome.answer) {
    case 'settings':
      return { detected: 'h2c', reason: 'the upstream answered an h2c prior-knowledge preface with SETTINGS' };
    case 'protocol-error':
      return {
        detected: 'http1',
        reason: `the upstream answered an h2c preface with something other than HTTP/2${outcome.detail ? ` (${outcome.detail})` : ''}`,
      };
    case 'closed':
      return { detected: 'http1', reason: 'the upstream closed the connection on an h2c preface' };
    case 'silent':
      return silentBefore + 1 >= MAX_SILENT_PROBES
        ? { detected: 'http1', reason: `no answer to an h2c preface in ${MAX_SILENT_PROBES} probes` }
        : { detected: 'unknown', reason: 'no answer to an h2c preface within the probe timeout' };
  }
}

/** The wait before probe number `failed + 1` after `failed` probes that could not tell (pure). */
export function probeDelayMs(failed: number, backoff = PROBE_BACKOFF_MS): number {
  return Math.min(backoff.max, backoff.first * 2 ** Math.max(0, failed - 1));
}

/** The h2c URL node:http2 connects to (an IPv6 address in brackets). */
export const h2cAuthority = (host: string, port: number) => `http://${host.includes(':') ? `[${host}]` : host}:${port}`;

/** One probe of host:port, bounded by `timeoutMs` (and ended by `signal`); never rejects. */
export function probeUpstream(
  host: string,
  port: number,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<ProbeOutcome> {
  return new Promise((resolve) => {
    const authority = h2cAuthority(host, port);
    let connected = false;
    let outcome: ProbeOutcome | undefined;
    const settle = (value: ProbeOutcome) => (outcome ??= value);
    const session = h2connect(authority, { settings: { enablePush: false } });
    const timer = setTimeout(() => {
      settle(connected ? { connected: true, answer: 'silent' } : { connected: false, error: 'connect timed out' });
      session.destroy();
    }, timeoutMs);
    timer.unref();
    const abort = () => {
      settle({ connected: false, error: 'probe stopped' });
      session.destroy();
    };
    signal?.addEventListener('abort', abort, { once: true });
    session.once('connect', () => (connected = true));
    session.once('remoteSettings', () => {
      settle({ connected: true, answer: 'settings' });
      session.close();
    });
    session.on('error', (err: NodeJS.ErrnoException) =>
      settle(
        connected
          ? { connected: true, answer: 'protocol-error', detail: err.code ?? err.message }
          : { connected: false, error: err.code ?? err.message },
      ),
    );
    session.once('close', () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', abort);
      resolve(
        outcome ??
          (connected ? { connected: true, answer: 'closed' } : { connected: false, error: 'connection closed' }),
      );
    });
  });
}

/** What the sidecar knows of its upstream's protocol: the admin port's /status and the log say this. */
export interface UpstreamProtocolFinding {
  requested: UpstreamProtocol;
  detected: StreamProtocol | 'unknown';
  reason: string;
  /** Probes made so far (0 when the protocol is set, not probed). */
  probes: number;
  /** When the last probe ended (ISO 8601). */
  probedAt?: string;
}

export interface UpstreamProtocolOptions {
  requested: UpstreamProtocol;
  host: string;
  port: number;
  log: Logger;
  metrics: SidecarMetrics;
  /** Tests shorten these. */
  timeoutMs?: number;
  backoff?: { first: number; max: number };
}

/** The protocol of the sidecar's upstream: set by the flag, or probed (`auto`). One per process. */
export class UpstreamProtocolChoice {
  private readonly options: UpstreamProtocolOptions;
  private state: UpstreamProtocolFinding;
  private inFlight: Promise<StreamProtocol> | null = null;
  private timer: NodeJS.Timeout | undefined;
  private lastProbeEnded = 0;
  private failed = 0;
  private silent = 0;
  /** Ends a probe in flight when the sidecar stops. */
  private readonly stopping = new AbortController();

  constructor(options: UpstreamProtocolOptions) {
    this.options = options;
    const { requested } = options;
    this.state =
      requested === 'auto'
        ? { requested, detected: 'unknown', reason: 'not probed yet', probes: 0 }
        : { requested, detected: requested, reason: 'set by --upstream-protocol', probes: 0 };
    this.report();
  }

  /** Probes at once when the protocol is `auto` (the upstream may not listen yet: then again with backoff). */
  start(): void {
    if (this.state.detected === 'unknown') void this.probe();
  }

  finding(): UpstreamProtocolFinding {
    return { ...this.state };
  }

  /**
   * The protocol for a stream: the one set or found, else the answer of a probe in flight or started now (at
   * most one per STREAM_PROBE_INTERVAL_MS, so a stream waits at most one probe timeout), else HTTP/1.1.
   */
  forStream(): StreamProtocol | Promise<StreamProtocol> {
    if (this.state.detected !== 'unknown') return this.state.detected;
    if (this.inFlight) return this.inFlight;
    if (!this.stopping.signal.aborted && performance.now() - this.lastProbeEnded >= STREAM_PROBE_INTERVAL_MS)
      return this.probe();
    return 'http1';
  }

  stop(): void {
    clearTimeout(this.timer);
    this.stopping.abort();
  }

  private probe(): Promise<StreamProtocol> {
    clearTimeout(this.timer);
    const { host, port, timeoutMs = PROBE_TIMEOUT_MS } = this.options;
    this.inFlight = probeUpstream(host, port, timeoutMs, this.stopping.signal).then((outcome) => {
      this.inFlight = null;
      this.lastProbeEnded = performance.now();
      return this.judge(outcome);
    });
    return this.inFlight;
  }

  private judge(outcome: ProbeOutcome): StreamProtocol {
    if (this.stopping.signal.aborted) return this.state.detected === 'unknown' ? 'http1' : this.state.detected;
    const verdict = decideUpstreamProtocol(outcome, this.silent);
    if (outcome.connected && outcome.answer === 'silent') this.silent++;
    this.state = {
      ...this.state,
      detected: verdict.detected,
      reason: verdict.reason,
      probes: this.state.probes + 1,
      probedAt: new Date().toISOString(),
    };
    this.report();
    const { log, host, port } = this.options;
    const fields = { upstream: `${host}:${port}`, ...this.state };
    if (verdict.detected !== 'unknown') {
      log.info('upstream protocol detected', fields);
      return verdict.detected;
    }
    this.failed++;
    const delay = probeDelayMs(this.failed, this.options.backoff);
    log[this.failed === 1 ? 'info' : 'debug']('upstream protocol not known yet; streams go as HTTP/1.1 meanwhile', {
      ...fields,
      nextProbeInMs: delay,
    });
    this.timer = setTimeout(() => void this.probe(), delay);
    this.timer.unref();
    return 'http1';
  }

  private report(): void {
    this.options.metrics.upstreamProtocol.set({ requested: this.state.requested, detected: this.state.detected });
  }
}
