import { logLine } from '../../sidecar/log.ts';

describe("sidecar: its JSON log lines (the operator's field names, without winston)", () => {
  const at = new Date('2026-01-02T03:04:05.678Z');

  it('writes component, the fields, level, message and time, in that order', () => {
    const line = logLine('sidecar', 'warn', 'refused', { listener: 8443, mode: 'strict', reason: 'expired' }, at);
    expect(line).toBe(
      '{"component":"sidecar","listener":8443,"mode":"strict","reason":"expired","level":"warn","message":"refused","time":"2026-01-02T03:04:05.678Z"}',
    );
  });

  it('never lets a private key through, in a field or in the message', () => {
    const pem = '-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49\n-----END PRIVATE KEY-----';
    const line = logLine('sidecar', 'error', `bad file: ${pem}`, { error: `cannot use ${pem} here` }, at);
    expect(line).not.toContain('MIGHAgEAMBMGByqGSM49');
    expect(JSON.parse(line)).toMatchObject({
      message: 'bad file: [redacted private key]',
      error: 'cannot use [redacted private key] here',
    });
  });

  it('still writes a line for fields JSON cannot hold', () => {
    const cyclic: Record<string, unknown> = { a: 1 };
    cyclic.self = cyclic;
    const line = JSON.parse(logLine('sidecar', 'info', 'odd', { cyclic, big: 10n }, at)) as Record<string, unknown>;
    expect(line).toMatchObject({ cyclic: '[object Object]', big: '10', message: 'odd', level: 'info' });
  });
});
