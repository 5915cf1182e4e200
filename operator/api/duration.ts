/**
 * Go durations (`time.ParseDuration`), as the CRD's duration fields hold them. The accepted form is a
 * little stricter than Go's: no sign, no bare `0`, no leading `.5` — the CRD pattern below is the same rule,
 * so whatever the API server admits this parses.
 */
const UNIT_MS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
};

/** The CRD's pattern for a Go duration such as `8760h`, `1h30m` or `90s`. */
export const DURATION_PATTERN = '^([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$';

/** The longest duration Go (and CEL's `duration()`) can represent: 2^63-1 ns, about 292 years. */
export const MAX_DURATION_MS = 9_223_372_036_854.775;

const DURATION_RE = new RegExp(DURATION_PATTERN);

/** Parses a Go duration into milliseconds; throws a readable error on anything else. */
export function parseDuration(text: string): number {
  if (typeof text !== 'string' || !DURATION_RE.test(text)) {
    throw new Error(`"${String(text)}" is not a duration such as 8760h, 90m or 1h30m`);
  }
  let total = 0;
  for (const [, value, unit] of text.matchAll(/([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)/g)) {
    total += Number(value) * UNIT_MS[unit!]!;
  }
  if (!(total <= MAX_DURATION_MS)) throw new Error(`"${text}" is longer than the longest duration (about 292 years)`);
  return total;
}

/** Formats milliseconds as a Go duration in hours, minutes and seconds (e.g. `2920h0m0s`), as Go prints it. */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) throw new Error(`cannot format ${ms} ms as a duration`);
  if (ms === 0) return '0s';
  const hours = Math.floor(ms / 3_600_000);
  const minutes = Math.floor((ms % 3_600_000) / 60_000);
  const seconds = (ms % 60_000) / 1000;
  const s = `${Number(seconds.toFixed(3))}s`;
  if (hours > 0) return `${hours}h${minutes}m${s}`;
  if (minutes > 0) return `${minutes}m${s}`;
  return s;
}
