/** What the hostile suite (sidecar-hostile.test.ts) and its support modules share: listeners, timeouts, limits. */
export const MODES = ['standard', 'flexible', 'strict'] as const;
export type Mode = (typeof MODES)[number];
/** Short timeouts, so that the slow attacks are cut off within a test's time. */
export const TIMEOUTS = { handshake: 2_000, headers: 2_000, request: 4_000, idle: 8_000, upstream: 5_000 };
/** How late a timeout may be observed (a sweep interval, a busy event loop on two shared cores). */
export const SLACK_MS = 8_000;
export const RSS_LIMIT_MIB = 250;
export const MAX_HEADER_BYTES = 16 * 1024;
