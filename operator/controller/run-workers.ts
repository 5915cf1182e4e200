import { isConflict, isNotFound } from '../kube/errors.ts';
import { errorMessage, type Logger } from '../log.ts';
import type { WorkQueue } from './workqueue.ts';

export interface ReconcileResult {
  /** Reconcile this key again after this long (e.g. at the next certificate renewal time). */
  requeueAfterMs?: number;
}

const STALE_CACHE_RETRY_MS = 50;

export type ReconcileFn = (key: string) => Promise<ReconcileResult>;

/**
 * Runs `count` workers that take keys from the queue until it shuts down. A failed reconcile is retried
 * with the key's backoff; a successful one clears it and honours `requeueAfterMs`.
 */
export function runWorkers(queue: WorkQueue, count: number, reconcile: ReconcileFn, log: Logger): Promise<void[]> {
  const worker = async () => {
    for (;;) {
      const key = await queue.get();
      if (key === undefined) return;
      try {
        const result = await reconcile(key);
        queue.forget(key);
        if (result.requeueAfterMs !== undefined) queue.addAfter(key, result.requeueAfterMs);
      } catch (err) {
        // 409/404 on a write: the cache was behind (often our own last write). Routine: retried soon, on
        // fresh data, with a short backoff of its own; real failures back off from half a second.
        const stale = isConflict(err) || isNotFound(err);
        const retryInMs = queue.addRateLimited(key, stale ? STALE_CACHE_RETRY_MS : undefined);
        const fields = { key, error: errorMessage(err), retryInMs, failures: queue.failureCount(key) };
        if (stale) log.debug('cache was stale; retrying', fields);
        else log.warn('reconcile failed; will retry', fields);
      } finally {
        queue.done(key);
      }
    }
  };
  return Promise.all(Array.from({ length: count }, worker));
}
