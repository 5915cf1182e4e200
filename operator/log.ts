import winston from 'winston';

/**
 * Structured JSON logs on stderr with stable field names: `time`, `level`, `component`, `message`, plus event
 * fields.
 * Anything that looks like PEM private-key material is replaced before it reaches a transport.
 */
const PRIVATE_KEY_PEM = /-----BEGIN ([A-Z ]*)PRIVATE KEY-----[\s\S]*?(-----END \1PRIVATE KEY-----|$)/g;

export function redactPrivateKeys(text: string): string {
  return text.replace(PRIVATE_KEY_PEM, '[redacted private key]');
}

const redact = winston.format((info) => {
  for (const [key, value] of Object.entries(info)) {
    if (typeof value === 'string' && value.includes('PRIVATE KEY')) info[key] = redactPrivateKeys(value);
  }
  return info;
});

export type Logger = winston.Logger;

const root = winston.createLogger({
  level: process.env.MTLS_LOG_LEVEL ?? process.env.LOG_LEVEL ?? 'info',
  format: winston.format.combine(
    redact(),
    winston.format.timestamp({ alias: 'time' }),
    winston.format((info) => {
      delete info.timestamp;
      return info;
    })(),
    winston.format.json({ deterministic: false }),
  ),
  transports: [new winston.transports.Console({ stderrLevels: ['error', 'warn', 'info', 'debug'] })],
});

export function logger(component: string): Logger {
  return root.child({ component });
}

export function setLogLevel(level: string): void {
  root.level = level;
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
