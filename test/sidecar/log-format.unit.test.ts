import { textLine } from '../../common/log-text.ts';
import { logLine } from '../../sidecar/log.ts';

describe('text log lines (--log-format text, MTLS_LOG_FORMAT=text)', () => {
  const at = new Date('2026-01-02T03:04:05.678Z');

  it('put time, level, component and message first, then the fields as key=value', () => {
    expect(
      textLine({
        component: 'operator',
        endpoint: 'team-a/payments',
        serial: 'ab12',
        reason: 'two words',
        detail: { a: 1 },
        level: 'info',
        message: 'certificate renewed',
        time: at.toISOString(),
      }),
    ).toBe(
      '2026-01-02T03:04:05.678Z INFO [operator] certificate renewed endpoint=team-a/payments serial=ab12 reason="two words" detail={"a":1}',
    );
  });

  it("are the sidecar's lines in text format, with private keys redacted as in JSON", () => {
    const pem = '-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49\n-----END PRIVATE KEY-----';
    const line = logLine('sidecar', 'warn', 'refused', { mode: 'strict', error: `bad ${pem}` }, at, 'text');
    expect(line).toBe('2026-01-02T03:04:05.678Z WARN [sidecar] refused mode=strict error="bad [redacted private key]"');
    expect(JSON.parse(logLine('sidecar', 'warn', 'refused', { mode: 'strict' }, at, 'json'))).toMatchObject({
      level: 'warn',
      mode: 'strict',
    });
  });

  it('still write a line for fields JSON cannot hold', () => {
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(textLine({ level: 'info', message: 'odd', big: 10n, cyclic })).toBe(
      'INFO odd big=10 cyclic="[object Object]"',
    );
  });
});
