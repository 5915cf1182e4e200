import { formatDuration, parseDuration } from '../../operator/api/duration.ts';

describe('Go durations', () => {
  it.each([
    ['8760h', 8760 * 3_600_000],
    ['43800h', 43800 * 3_600_000],
    ['1h30m', 90 * 60_000],
    ['90s', 90_000],
    ['1.5h', 90 * 60_000],
    ['2h45m30.5s', ((2 * 60 + 45) * 60 + 30.5) * 1000],
    ['250ms', 250],
    ['1500us', 1.5],
    ['1500µs', 1.5],
    ['2000000ns', 2],
    ['1m1m', 120_000],
  ])('parses %s', (text, ms) => {
    expect(parseDuration(text)).toBeCloseTo(ms, 6);
  });

  it.each(['', '1y', '1d', '10', '-1h', '+1h', '.5h', '1h ', ' 1h', 'h', '1H', '1h-30m', '1.h', '0x10s'])(
    'refuses %j with a readable error',
    (text) => {
      expect(() => parseDuration(text)).toThrow(/is not a duration such as 8760h/);
    },
  );

  it('refuses what Go cannot represent, as the API server does', () => {
    expect(parseDuration('2562047h')).toBe(2562047 * 3_600_000);
    expect(() => parseDuration('2562048h')).toThrow(/longer than the longest duration/);
  });

  it('formats milliseconds as Go does', () => {
    expect(formatDuration(8760 * 3_600_000)).toBe('8760h0m0s');
    expect(formatDuration(90 * 60_000)).toBe('1h30m0s');
    expect(formatDuration(90_500)).toBe('1m30.5s');
    expect(formatDuration(0)).toBe('0s');
    expect(parseDuration(formatDuration(2920 * 3_600_000 + 1234))).toBe(2920 * 3_600_000 + 1234);
  });
});
