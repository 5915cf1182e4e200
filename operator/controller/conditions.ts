import type { Condition } from '../api/types.ts';

export type { Condition };

/**
 * Sets a condition the way meta.SetStatusCondition does: lastTransitionTime moves only when the status
 * flips, so re-running a reconcile that changes nothing produces an identical list (and no write).
 */
export function setCondition(
  conditions: Condition[],
  next: Omit<Condition, 'lastTransitionTime'>,
  now: Date,
): Condition[] {
  const previous = conditions.find((c) => c.type === next.type);
  const lastTransitionTime =
    previous && previous.status === next.status
      ? previous.lastTransitionTime
      : now.toISOString().replace(/\.\d+Z$/, 'Z');
  const updated: Condition = { ...next, lastTransitionTime };
  return previous ? conditions.map((c) => (c.type === next.type ? updated : c)) : [...conditions, updated];
}
