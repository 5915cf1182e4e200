import winston from 'winston';
import { type LogFormat, redactPrivateKeys, textLine } from '../common/log-text.ts';

export { errorMessage, redactPrivateKeys } from '../common/log-text.ts';

/**
 * Structured logs on stderr: JSON by default, or text lines (setLogFormat, --log-format) with stable field names: `time`, `level`, `component`, `message`, plus event
 * fields.
 * Anything that looks like PEM private-key material is replaced before it reaches a transport.
 */
const redact = winston.format((info) => {
  for (const [key, value] of Object.entries(info)) {
    if (typeof value === 'string' && value.includes('PRIVATE KEY')) info[key] = redactPrivateKeys(value);
  }
  return info;
});

export type Logger = winston.Logger;

/** Where winston's transports read the finished line (triple-beam's MESSAGE). */
const MESSAGE = Symbol.for('message');

let format: LogFormat = process.env.MTLS_LOG_FORMAT === 'text' ? 'text' : 'json';
const json = winston.format.json({ deterministic: false });
/** json or text, chosen per line so setLogFormat applies to loggers already made. */
const line = winston.format((info) => {
  if (format === 'json') return json.transform(info, json.options);
  info[MESSAGE] = textLine(info);
  return info;
});

const root = winston.createLogger({
  level: process.env.MTLS_LOG_LEVEL ?? process.env.LOG_LEVEL ?? 'info',
  format: winston.format.combine(
    redact(),
    winston.format.timestamp({ alias: 'time' }),
    winston.format((info) => {
      delete info.timestamp;
      return info;
    })(),
    line(),
  ),
  transports: [new winston.transports.Console({ stderrLevels: ['error', 'warn', 'info', 'debug'] })],
});

export function logger(component: string): Logger {
  return root.child({ component });
}

export function setLogLevel(level: string): void {
  root.level = level;
}

export function setLogFormat(value: LogFormat): void {
  format = value;
}
