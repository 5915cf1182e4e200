import { redactPrivateKeys } from '../common/log-text.ts';

/**
 * The sidecar's logs: one JSON object per line on stderr with the same fields, in the same order, as the
 * operator's winston logs (operator/log.ts): `component`, the event's fields, `level`, `message`, `time`.
 * Its own few lines instead of winston because winston cost every pod 8 MiB of resident memory (the idle
 * sidecar went from 69 to 61 MiB without it; bench/RESULTS.md); the sidecar logs a handful of event kinds and
 * needs none of its transports or formats.
 * Level names are npm's (error, warn, info, http, verbose, debug, silly), from MTLS_LOG_LEVEL or LOG_LEVEL.
 */
const LEVELS: Record<string, number> = { error: 0, warn: 1, info: 2, http: 3, verbose: 4, debug: 5, silly: 6 };

let threshold = LEVELS[process.env.MTLS_LOG_LEVEL ?? process.env.LOG_LEVEL ?? 'info'] ?? LEVELS.info!;

export function setLogLevel(level: string): void {
  threshold = LEVELS[level] ?? LEVELS.info!;
}

/** An event's fields: any object whose own enumerable properties become fields of the line. */
export type LogFields = object;

export interface Logger {
  error(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  debug(message: string, fields?: LogFields): void;
}

/** The line for one event (without its newline): what a log reader sees. Private keys never get through. */
export function logLine(component: string, level: string, message: string, fields: LogFields, time: Date): string {
  const entry: Record<string, unknown> = { component };
  for (const [key, value] of Object.entries(fields)) {
    entry[key] = typeof value === 'string' && value.includes('PRIVATE KEY') ? redactPrivateKeys(value) : value;
  }
  entry.level = level;
  entry.message = message.includes('PRIVATE KEY') ? redactPrivateKeys(message) : message;
  entry.time = time.toISOString();
  try {
    return JSON.stringify(entry);
  } catch {
    // A field JSON cannot hold (a cycle, a BigInt): the event still gets its line, that field as text.
    for (const [key, value] of Object.entries(entry)) {
      if (typeof value === 'object' || typeof value === 'bigint') entry[key] = String(value);
    }
    return JSON.stringify(entry);
  }
}

export function logger(component: string): Logger {
  const at = (level: string) => {
    const rank = LEVELS[level]!;
    return (message: string, fields: LogFields = {}) => {
      if (rank > threshold) return;
      process.stderr.write(`${logLine(component, level, message, fields, new Date())}\n`);
    };
  };
  return { error: at('error'), warn: at('warn'), info: at('info'), debug: at('debug') };
}
