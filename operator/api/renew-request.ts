import { RENEW_REQUESTED_ANNOTATION } from './types.ts';

/**
 * The value of the `mtls.operator.dev/renew-requested` annotation (docs/DESIGN.md contract 1): which
 * certificates a user asked to have re-issued, and when. Written by `kubectl mtls renew`, read by the
 * controller (operator/controller/renew-request.ts). Pure: parsing, formatting, adding a request.
 */
export type RenewTarget = { kind: 'all' } | { kind: 'server' } | { kind: 'client'; client: string };

export interface RenewEntry {
  /** `all`, `server` or `client/NAME`, as written in the annotation. */
  target: string;
  at: Date;
}

export { RENEW_REQUESTED_ANNOTATION };

export function targetKey(target: RenewTarget): string {
  return target.kind === 'client' ? `client/${target.client}` : target.kind;
}

const TARGET = /^(all|server|client\/[a-z0-9]([-a-z0-9]*[a-z0-9])?)$/;

/** RFC 3339 in UTC to the second, the form the CLI writes. */
export const rfc3339 = (at: Date) =>
  new Date(Math.floor(at.getTime() / 1000) * 1000).toISOString().replace('.000Z', 'Z');

/** The readable entries of an annotation value, and what could not be read (to report, never to act on). */
export function parseRenewRequests(value: string | undefined): { entries: RenewEntry[]; problems: string[] } {
  const entries: RenewEntry[] = [];
  const problems: string[] = [];
  for (const item of (value ?? '').split(',').map((part) => part.trim())) {
    if (!item) continue;
    const eq = item.indexOf('=');
    const target = eq < 0 ? item : item.slice(0, eq);
    const time = eq < 0 ? '' : item.slice(eq + 1);
    const at = new Date(time);
    if (!TARGET.test(target)) {
      problems.push(`"${item}": the target must be all, server or client/NAME`);
    } else if (!/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/i.test(time) || Number.isNaN(at.getTime())) {
      problems.push(`"${item}": expected ${target}=<RFC 3339 time>, e.g. ${target}=2026-01-02T15:04:05Z`);
    } else {
      entries.push({ target, at });
    }
  }
  return { entries, problems };
}

/** The annotation value with `target` requested at `at`: its earlier entry replaced, the others kept. */
export function withRenewRequest(value: string | undefined, target: RenewTarget, at: Date): string {
  const key = targetKey(target);
  const kept = parseRenewRequests(value).entries.filter((entry) => entry.target !== key);
  return [...kept, { target: key, at }].map((entry) => `${entry.target}=${rfc3339(entry.at)}`).join(',');
}
