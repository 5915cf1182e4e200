/**
 * What may go into a log line, event or status, shared by the operator's winston logger (operator/log.ts) and
 * the sidecar's own (sidecar/log.ts): no private key, and API errors in the API server's words. No logger
 * library here, so the sidecar can use it without loading one.
 */
const PRIVATE_KEY_PEM = /-----BEGIN ([A-Z ]*)PRIVATE KEY-----[\s\S]*?(-----END \1PRIVATE KEY-----|$)/g;

/** Anything that looks like PEM private-key material, replaced. */
export function redactPrivateKeys(text: string): string {
  return text.replace(PRIVATE_KEY_PEM, '[redacted private key]');
}

/**
 * A one-line description of an error for logs, events and status. Kubernetes API errors (client-node's
 * ApiException: numeric `code`, `body` as a JSON string or object) become the API server's own message.
 */
export function errorMessage(err: unknown): string {
  const e = err as { code?: unknown; body?: unknown; message?: string } | undefined;
  let text = err instanceof Error ? err.message : String(err);
  if (typeof e?.code === 'number' && e.body !== undefined) {
    let body = e.body;
    try {
      if (typeof body === 'string') body = JSON.parse(body);
    } catch {
      // not JSON: keep the raw text
    }
    const message = typeof body === 'object' && body ? (body as { message?: string }).message : String(body);
    text = message ? `${message} (HTTP ${e.code})` : `HTTP ${e.code}`;
  }
  return redactPrivateKeys(text);
}

/** The levels of the operator's and the sidecar's logs (--log-level), quietest first. */
export const LOG_LEVELS = ['error', 'warn', 'info', 'debug'] as const;

/** The two line formats of the operator's and the sidecar's logs (--log-format, MTLS_LOG_FORMAT). */
export const LOG_FORMATS = ['json', 'text'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

export function isLogFormat(value: string): value is LogFormat {
  return (LOG_FORMATS as readonly string[]).includes(value);
}

const BARE_VALUE = /^[^\s"=]+$/;

/**
 * One event as a line for people (--log-format text): `time LEVEL [component] message key=value ...`, the same
 * fields as the JSON line; values with spaces or quotes are JSON-quoted, objects JSON-encoded.
 */
export function textLine(entry: Record<string, unknown>): string {
  const { time, level, component, message, ...fields } = entry;
  const value = (v: unknown): string => {
    if (typeof v === 'string') return BARE_VALUE.test(v) ? v : JSON.stringify(v);
    if (typeof v === 'bigint') return String(v);
    try {
      return JSON.stringify(v) ?? String(v);
    } catch {
      return JSON.stringify(String(v));
    }
  };
  const head = [String(time ?? ''), String(level ?? '').toUpperCase(), component ? `[${String(component)}]` : ''];
  const pairs = Object.entries(fields).map(([k, v]) => `${k}=${value(v)}`);
  return [...head.filter(Boolean), String(message ?? ''), ...pairs].join(' ');
}
