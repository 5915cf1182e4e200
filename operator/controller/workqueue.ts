/**
 * A rate-limited work queue in the manner of client-go's: a key is never handed to two workers at once,
 * adding a key that is queued is a no-op, a key added while being processed is processed again afterwards,
 * failures back off exponentially per key, and `addAfter` schedules the earliest of several requested times.
 */
export interface WorkQueueOptions {
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** Told what the queue does, as client-go's workqueue metrics provider is. */
  metrics?: WorkQueueMetrics;
  /** Milliseconds on a monotonic clock (tests pass their own). */
  now?: () => number;
}

/** What client-go's workqueue reports: depth, adds, time waiting in the queue, time being worked on, retries. */
export interface WorkQueueMetrics {
  /** A key was added that was not already waiting (a key added while it is processed counts: it runs again). */
  added(): void;
  depth(keys: number): void;
  /** A worker took a key that had waited this long since it was added. */
  waited(seconds: number): void;
  /** A worker finished a key after this long. */
  worked(seconds: number): void;
  /** A key was re-added after a failure (with backoff). */
  retried(): void;
}

export class WorkQueue {
  private readonly queue: string[] = [];
  private readonly queued = new Set<string>();
  private readonly processing = new Set<string>();
  private readonly dirty = new Set<string>();
  private readonly failures = new Map<string, number>();
  private readonly timers = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  private readonly waiters: ((key: string | undefined) => void)[] = [];
  private shuttingDown = false;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly metrics: WorkQueueMetrics | undefined;
  private readonly now: () => number;
  /** When each key waiting (queued, or dirty while processed) was first added. */
  private readonly addedAt = new Map<string, number>();
  private readonly startedAt = new Map<string, number>();

  constructor(options: WorkQueueOptions = {}) {
    this.baseDelayMs = options.baseDelayMs ?? 500;
    this.maxDelayMs = options.maxDelayMs ?? 5 * 60_000;
    this.metrics = options.metrics;
    this.now = options.now ?? (() => performance.now());
    this.metrics?.depth(0);
  }

  add(key: string): void {
    if (this.shuttingDown) return;
    if (this.processing.has(key)) {
      if (!this.dirty.has(key)) this.noteAdded(key);
      this.dirty.add(key);
      return;
    }
    if (this.queued.has(key)) return;
    this.noteAdded(key);
    this.enqueue(key);
  }

  private noteAdded(key: string): void {
    this.metrics?.added();
    if (!this.addedAt.has(key)) this.addedAt.set(key, this.now());
  }

  private enqueue(key: string): void {
    const waiter = this.waiters.shift();
    if (waiter) {
      this.start(key);
      waiter(key);
      return;
    }
    this.queued.add(key);
    this.queue.push(key);
    this.metrics?.depth(this.queue.length);
  }

  /** A worker takes the key. */
  private start(key: string): void {
    this.processing.add(key);
    const now = this.now();
    const addedAt = this.addedAt.get(key);
    this.addedAt.delete(key);
    if (addedAt !== undefined) this.metrics?.waited((now - addedAt) / 1000);
    this.startedAt.set(key, now);
  }

  /** Adds `key` after `delayMs`, unless an earlier add for it is already scheduled. */
  addAfter(key: string, delayMs: number): void {
    if (this.shuttingDown) return;
    if (delayMs <= 0) return this.add(key);
    const at = Date.now() + delayMs;
    const existing = this.timers.get(key);
    if (existing && existing.at <= at) return;
    if (existing) clearTimeout(existing.timer);
    // Timers cap at ~24.8 days; a later wake-up is re-armed by the resync anyway.
    const timer = setTimeout(
      () => {
        this.timers.delete(key);
        this.add(key);
      },
      Math.min(delayMs, 2 ** 31 - 1),
    );
    timer.unref();
    this.timers.set(key, { at, timer });
  }

  /** Re-adds after this key's next backoff delay (base * 2^failures, capped); `baseMs` overrides the base. */
  addRateLimited(key: string, baseMs = this.baseDelayMs): number {
    const failures = this.failures.get(key) ?? 0;
    this.failures.set(key, failures + 1);
    this.metrics?.retried();
    const delay = Math.min(baseMs * 2 ** failures, this.maxDelayMs);
    this.addAfter(key, delay);
    return delay;
  }

  /** Clears the backoff of a key that succeeded. */
  forget(key: string): void {
    this.failures.delete(key);
  }

  failureCount(key: string): number {
    return this.failures.get(key) ?? 0;
  }

  /** Waits for the next key; undefined once the queue shuts down. Call `done(key)` after processing it. */
  get(): Promise<string | undefined> {
    if (this.shuttingDown) return Promise.resolve(undefined);
    const key = this.queue.shift();
    if (key !== undefined) {
      this.queued.delete(key);
      this.metrics?.depth(this.queue.length);
      this.start(key);
      return Promise.resolve(key);
    }
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  done(key: string): void {
    this.processing.delete(key);
    const startedAt = this.startedAt.get(key);
    this.startedAt.delete(key);
    if (startedAt !== undefined) this.metrics?.worked((this.now() - startedAt) / 1000);
    if (this.dirty.delete(key) && !this.shuttingDown) this.enqueue(key);
  }

  get length(): number {
    return this.queue.length;
  }

  shutDown(): void {
    this.shuttingDown = true;
    for (const { timer } of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    this.waiters.splice(0).forEach((resolve) => resolve(undefined));
  }
}
