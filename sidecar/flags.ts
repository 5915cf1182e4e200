import { type FlagSpecs, helpText, parseFlags, UsageError } from '../common/flags.ts';
import { isLogFormat, LOG_FORMATS, LOG_LEVELS, type LogFormat } from '../common/log-text.ts';

/**
 * The sidecar's command line, defined once: `parseSidecarArgs` reads it, `renderSidecarArgs` writes it (the
 * injector renders the container args with it), and `sidecarHelp` documents it.
 */
export const MODES = ['standard', 'flexible', 'strict'] as const;
export type Mode = (typeof MODES)[number];

/** What a listener carries: HTTP (parsed, identity headers set) or TCP (bytes relayed as they are). */
export const LISTENER_PROTOCOLS = ['http', 'tcp'] as const;
export type ListenerProtocol = (typeof LISTENER_PROTOCOLS)[number];

/**
 * How HTTP/2 clients' streams reach the upstream: as HTTP/1.1 requests, as h2c streams (prior knowledge), or
 * `auto`: whichever of the two a probe of the upstream finds (upstream-protocol.ts).
 */
export const UPSTREAM_PROTOCOLS = ['http1', 'h2c', 'auto'] as const;
export type UpstreamProtocol = (typeof UPSTREAM_PROTOCOLS)[number];
/** What a stream is actually forwarded as (`auto` resolves to one of these). */
export type StreamProtocol = Exclude<UpstreamProtocol, 'auto'>;

/**
 * Listeners that misbehave on purpose, for client teams to prove their client refuses them (test-listeners.ts
 * serves them; spec.testListeners[].kind in the CRD). They never forward to the upstream.
 */
export const TEST_LISTENER_KINDS = [
  'ExpiredCertificate',
  'UntrustedCA',
  'WrongHost',
  'TLS12Only',
  'TLS13Only',
  'ClientCAMismatch',
] as const;
export type TestListenerKind = (typeof TEST_LISTENER_KINDS)[number];

export interface TestListener {
  kind: TestListenerKind;
  port: number;
}

/**
 * The admin port (health and /metrics), clear of the ports meshes and proxies take for themselves: Istio
 * 15000-15090 (15021 is its health port), Linkerd 41xx, Envoy's admin 9901, Consul 19000 and 20000+. The
 * operator's default for injected sidecars (`--sidecar-admin-port`, chart value sidecar.adminPort) is this one.
 */
export const DEFAULT_ADMIN_PORT = 15201;

export const SIDECAR_DEFAULTS = {
  admin: `127.0.0.1:${DEFAULT_ADMIN_PORT}`,
  handshakeTimeoutMs: 10_000,
  headersTimeoutMs: 15_000,
  requestTimeoutMs: 60_000,
  idleTimeoutMs: 120_000,
  upstreamTimeoutMs: 30_000,
  maxHeaderBytes: 16 * 1024,
  maxConnections: 10_000,
  drainTimeoutMs: 15_000,
  workers: 1,
} as const;

/**
 * Node.js options for the sidecar process (the injector sets them as NODE_OPTIONS). A 1 MiB young generation
 * (V8's default grows to 16 MiB per semi-space) cut peak RSS under load from ~85 to ~78 MiB and the longest
 * scavenge after a handshake flood from ~27 ms to a few ms, with no measurable loss of throughput
 * (bench/RESULTS.md). V8 reads it only at start: it cannot be set from inside the process.
 */
export const SIDECAR_NODE_OPTIONS = '--max-semi-space-size=1';

export const SIDECAR_FLAGS = {
  listen: {
    type: 'string',
    value: 'MODE=PORT[/tcp]',
    multiple: true,
    help: 'a TLS listener: standard, flexible or strict, and its port; /tcp relays bytes instead of HTTP',
  },
  upstream: { type: 'string', value: 'HOST:PORT', help: 'the plain-HTTP service to forward to (e.g. 127.0.0.1:8080)' },
  'upstream-protocol': {
    type: 'string',
    value: 'http1|h2c|auto',
    help: "how HTTP/2 clients' requests go upstream: HTTP/1.1, h2c (cleartext HTTP/2, needed for gRPC), or auto (probe the upstream once)",
    default: 'http1',
  },
  'proxy-protocol': {
    type: 'boolean',
    help: 'tcp listeners: start each upstream connection with a PROXY v2 header (client address and identity)',
  },
  'tls-dir': {
    type: 'string',
    value: 'DIR',
    help: 'tls.crt, tls.key, ca.crt and optional ca.crl, laid out as a Secret volume',
  },
  'test-listen': {
    type: 'string',
    value: 'KIND=PORT',
    multiple: true,
    help: `a listener that misbehaves on purpose, for testing clients: ${TEST_LISTENER_KINDS.join(', ')}`,
  },
  'test-tls-dir': {
    type: 'string',
    value: 'DIR',
    help: "the bad certificates of --test-listen (the operator's <endpoint>-test-servers Secret)",
  },
  admin: {
    type: 'string',
    value: 'HOST:PORT',
    help: '/healthz, /readyz and /metrics',
    default: SIDECAR_DEFAULTS.admin,
  },
  'allow-client': {
    type: 'string',
    value: 'NAME',
    multiple: true,
    help: 'only these clients (certificate CN) may connect',
  },
  'handshake-timeout': {
    type: 'string',
    value: 'MS',
    help: 'TLS handshake timeout',
    default: String(SIDECAR_DEFAULTS.handshakeTimeoutMs),
  },
  'headers-timeout': {
    type: 'string',
    value: 'MS',
    help: 'time to receive request headers',
    default: String(SIDECAR_DEFAULTS.headersTimeoutMs),
  },
  'request-timeout': {
    type: 'string',
    value: 'MS',
    help: 'time to receive a whole request',
    default: String(SIDECAR_DEFAULTS.requestTimeoutMs),
  },
  'idle-timeout': {
    type: 'string',
    value: 'MS',
    help: 'idle keep-alive connections are closed after this',
    default: String(SIDECAR_DEFAULTS.idleTimeoutMs),
  },
  'upstream-timeout': {
    type: 'string',
    value: 'MS',
    help: 'time for the upstream to start answering (then 504)',
    default: String(SIDECAR_DEFAULTS.upstreamTimeoutMs),
  },
  'max-header-bytes': {
    type: 'string',
    value: 'N',
    help: 'largest request head accepted (then 431)',
    default: String(SIDECAR_DEFAULTS.maxHeaderBytes),
  },
  'max-connections': {
    type: 'string',
    value: 'N',
    help: 'open client connections per listener',
    default: String(SIDECAR_DEFAULTS.maxConnections),
  },
  workers: {
    type: 'string',
    value: 'N',
    help: 'processes serving the listeners on shared ports (SO_REUSEPORT, one per core); /metrics sums them',
    default: String(SIDECAR_DEFAULTS.workers),
  },
  'log-level': { type: 'string', value: 'LEVEL', help: 'error, warn, info or debug (default: MTLS_LOG_LEVEL or info)' },
  'log-format': { type: 'string', value: 'FORMAT', help: 'json or text (default: MTLS_LOG_FORMAT or json)' },
} as const satisfies FlagSpecs;

/** The levels the sidecar's --log-level takes (the operator's --sidecar-log-level and the chart's alike). */
export const SIDECAR_LOG_LEVELS = LOG_LEVELS;

export interface Listener {
  mode: Mode;
  port: number;
  /** Absent: http. */
  protocol?: ListenerProtocol;
}

export interface SidecarConfig {
  listen: Listener[];
  upstream: string;
  upstreamProtocol?: UpstreamProtocol;
  proxyProtocol?: boolean;
  tlsDir: string;
  /** Absent: none. */
  testListen?: TestListener[];
  /** Required with testListen. */
  testTlsDir?: string;
  admin?: string;
  allowClients?: string[];
  handshakeTimeoutMs?: number;
  headersTimeoutMs?: number;
  requestTimeoutMs?: number;
  idleTimeoutMs?: number;
  upstreamTimeoutMs?: number;
  maxHeaderBytes?: number;
  maxConnections?: number;
  workers?: number;
  /** Unset: MTLS_LOG_LEVEL, else info. */
  logLevel?: string;
  /** Unset: MTLS_LOG_FORMAT, else json. */
  logFormat?: LogFormat;
}

type OptionalSettings = 'logLevel' | 'logFormat' | 'testTlsDir';
export type ResolvedSidecarConfig = Required<Omit<SidecarConfig, OptionalSettings>> &
  Pick<SidecarConfig, OptionalSettings> & { upstreamHost: string; upstreamPort: number };

const SYNOPSIS =
  '--listen MODE=PORT [--listen ...] --upstream HOST:PORT --tls-dir DIR [--admin HOST:PORT] [--allow-client NAME ...]';

export function sidecarHelp(): string {
  return helpText('sidecar', SYNOPSIS, SIDECAR_FLAGS);
}

function hostPort(flag: string, value: string, allowZero = false): { host: string; port: number } {
  const match = value.match(/^(.*):(\d+)$/);
  const port = Number(match?.[2]);
  if (!match || !match[1] || port < (allowZero ? 0 : 1) || port > 65535) {
    throw new UsageError(`--${flag}: "${value}" is not HOST:PORT`);
  }
  return { host: match[1].replace(/^\[|\]$/g, ''), port };
}

function positive(flag: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new UsageError(`--${flag}: "${value}" is not a positive whole number`);
  return n;
}

/** The port of a --listen or --test-listen value; 0 lets the OS pick a free one (tests: the bound ports are logged). */
function listenPort(flag: string, value: string, portText: string | undefined): number {
  const port = Number(portText);
  if (!portText || !Number.isInteger(port) || port < 0 || port > 65535)
    throw new UsageError(`--${flag} ${value}: port must be 1-65535`);
  return port;
}

/** The configuration in `argv`, for callers that never ask for --help (tests, benchmarks, workers). */
export function parseSidecarConfig(argv: string[]): ResolvedSidecarConfig {
  const { config } = parseSidecarArgs(argv);
  if (!config) throw new UsageError('--help asks for the usage, not for a configuration');
  return config;
}

/** Parses the sidecar's argv; throws UsageError naming the flag that is wrong. */
export function parseSidecarArgs(
  argv: string[],
): { config: ResolvedSidecarConfig; help: false } | { config?: undefined; help: true } {
  const { flags, positionals, help } = parseFlags(SIDECAR_FLAGS, argv);
  if (help) return { help };
  if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  if (flags.listen.length === 0)
    throw new UsageError('--listen MODE=PORT is required (mode: standard, flexible or strict)');
  const listen = flags.listen.map((value): Listener => {
    const [mode, target = ''] = value.split('=');
    const [portText, protocol, ...rest] = target.split('/');
    if (rest.length || (protocol !== undefined && protocol !== 'tcp'))
      throw new UsageError(`--listen ${value}: write MODE=PORT for HTTP or MODE=PORT/tcp to relay TCP`);
    if (!MODES.includes(mode as Mode))
      throw new UsageError(`--listen ${value}: mode must be standard, flexible or strict`);
    const port = listenPort('listen', value, portText);
    return protocol === 'tcp' ? { mode: mode as Mode, port, protocol } : { mode: mode as Mode, port };
  });
  const testListen = flags['test-listen'].map((value): TestListener => {
    const [kind = '', portText = ''] = value.split('=');
    if (!(TEST_LISTENER_KINDS as readonly string[]).includes(kind))
      throw new UsageError(`--test-listen ${value}: kind must be one of ${TEST_LISTENER_KINDS.join(', ')}`);
    const port = listenPort('test-listen', value, portText);
    return { kind: kind as TestListenerKind, port };
  });
  if (testListen.length && !flags['test-tls-dir'])
    throw new UsageError('--test-listen needs --test-tls-dir DIR (the bad certificates it serves)');
  const ports = [...listen, ...testListen].map((l) => l.port);
  const dup = ports.find((p, i) => p !== 0 && ports.indexOf(p) !== i);
  if (dup !== undefined) throw new UsageError(`--listen/--test-listen: port ${dup} is used twice`);
  if (!flags.upstream) throw new UsageError('--upstream HOST:PORT is required');
  if (!flags['tls-dir']) throw new UsageError('--tls-dir DIR is required');
  const upstream = hostPort('upstream', flags.upstream);
  if (
    [...listen, ...testListen].some((l) => l.port === upstream.port) &&
    ['127.0.0.1', 'localhost', '::1'].includes(upstream.host)
  ) {
    throw new UsageError(`--upstream ${flags.upstream}: the sidecar itself listens on that port`);
  }
  hostPort('admin', flags.admin, true);
  const upstreamProtocol = flags['upstream-protocol'] as UpstreamProtocol;
  if (!UPSTREAM_PROTOCOLS.includes(upstreamProtocol))
    throw new UsageError(`--upstream-protocol: "${upstreamProtocol}" must be one of ${UPSTREAM_PROTOCOLS.join(', ')}`);
  const logLevel = flags['log-level'];
  if (logLevel !== undefined && !(SIDECAR_LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new UsageError(`--log-level: "${logLevel}" is not one of ${SIDECAR_LOG_LEVELS.join(', ')}`);
  }
  const logFormat = flags['log-format'];
  if (logFormat !== undefined && !isLogFormat(logFormat)) {
    throw new UsageError(`--log-format: "${logFormat}" is not one of ${LOG_FORMATS.join(', ')}`);
  }
  return {
    help: false,
    config: {
      listen,
      upstream: flags.upstream,
      upstreamHost: upstream.host,
      upstreamPort: upstream.port,
      upstreamProtocol,
      proxyProtocol: flags['proxy-protocol'],
      tlsDir: flags['tls-dir'],
      testListen,
      testTlsDir: flags['test-tls-dir'],
      admin: flags.admin,
      allowClients: flags['allow-client'],
      handshakeTimeoutMs: positive('handshake-timeout', flags['handshake-timeout']),
      headersTimeoutMs: positive('headers-timeout', flags['headers-timeout']),
      requestTimeoutMs: positive('request-timeout', flags['request-timeout']),
      idleTimeoutMs: positive('idle-timeout', flags['idle-timeout']),
      upstreamTimeoutMs: positive('upstream-timeout', flags['upstream-timeout']),
      maxHeaderBytes: positive('max-header-bytes', flags['max-header-bytes']),
      maxConnections: positive('max-connections', flags['max-connections']),
      workers: positive('workers', flags.workers),
      logLevel,
      logFormat,
    },
  };
}

/** The argv for a config (flags at their default are left out, so injected pods stay readable). */
export function renderSidecarArgs(config: SidecarConfig): string[] {
  const args: string[] = [];
  for (const l of config.listen) args.push('--listen', `${l.mode}=${l.port}${l.protocol === 'tcp' ? '/tcp' : ''}`);
  args.push('--upstream', config.upstream, '--tls-dir', config.tlsDir);
  for (const l of config.testListen ?? []) args.push('--test-listen', `${l.kind}=${l.port}`);
  if (config.testListen?.length && config.testTlsDir) args.push('--test-tls-dir', config.testTlsDir);
  if (config.upstreamProtocol && config.upstreamProtocol !== 'http1')
    args.push('--upstream-protocol', config.upstreamProtocol);
  if (config.proxyProtocol) args.push('--proxy-protocol');
  if (config.admin && config.admin !== SIDECAR_DEFAULTS.admin) args.push('--admin', config.admin);
  for (const name of config.allowClients ?? []) args.push('--allow-client', name);
  const numeric: [keyof SidecarConfig, keyof typeof SIDECAR_FLAGS, number][] = [
    ['handshakeTimeoutMs', 'handshake-timeout', SIDECAR_DEFAULTS.handshakeTimeoutMs],
    ['headersTimeoutMs', 'headers-timeout', SIDECAR_DEFAULTS.headersTimeoutMs],
    ['requestTimeoutMs', 'request-timeout', SIDECAR_DEFAULTS.requestTimeoutMs],
    ['idleTimeoutMs', 'idle-timeout', SIDECAR_DEFAULTS.idleTimeoutMs],
    ['upstreamTimeoutMs', 'upstream-timeout', SIDECAR_DEFAULTS.upstreamTimeoutMs],
    ['maxHeaderBytes', 'max-header-bytes', SIDECAR_DEFAULTS.maxHeaderBytes],
    ['maxConnections', 'max-connections', SIDECAR_DEFAULTS.maxConnections],
    ['workers', 'workers', SIDECAR_DEFAULTS.workers],
  ];
  for (const [key, flag, fallback] of numeric) {
    const value = config[key] as number | undefined;
    if (value !== undefined && value !== fallback) args.push(`--${flag}`, String(value));
  }
  if (config.logLevel) args.push('--log-level', config.logLevel);
  if (config.logFormat) args.push('--log-format', config.logFormat);
  return args;
}
