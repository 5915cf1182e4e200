import winston from 'winston';
import { redactPrivateKeys } from '../common/log-text.ts';

export { errorMessage, redactPrivateKeys } from '../common/log-text.ts';

/**
 * Structured JSON logs on stderr with stable field names: `time`, `level`, `component`, `message`, plus event
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
