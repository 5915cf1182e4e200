import {
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  type ListPromise,
  makeInformer,
} from '@kubernetes/client-node';
import { errorMessage, logger } from '../log.ts';

type Handler<T> = (obj: T) => void;

/**
 * An informer that does not stay dead. client-node's informer stops on any watch or list error other than
 * 410 Gone; this one restarts it with capped exponential backoff, and a watchdog restarts it if it has been
 * silent (no event, no reconnect) for longer than `staleAfterMs`, which catches a watch that hangs.
 */
export class ResilientInformer<T extends KubernetesObject> {
  private readonly inner: ReturnType<typeof makeInformer<T>>;
  private readonly log;
  private stopped = true;
  private restartTimer: NodeJS.Timeout | undefined;
  private watchdog: NodeJS.Timeout | undefined;
  private backoffMs = 0;
  private lastActivity = Date.now();
  private synced = false;
  private readonly syncWaiters: (() => void)[] = [];
  restarts = 0;

  private readonly staleAfterMs: number;

  constructor(
    kc: KubeConfig,
    path: string,
    list: ListPromise<T>,
    options: {
      labelSelector?: string;
      staleAfterMs?: number;
      name?: string;
      /** Trims an object before it is cached (as controller-runtime's cache transforms do); runs first. */
      transform?: (obj: T) => void;
    } = {},
  ) {
    const listAndMarkSynced: ListPromise<T> = async () => {
      const result = await list();
      // The informer fills its cache synchronously right after this resolves; wake waiters after that.
      setImmediate(() => this.markSynced());
      return result;
    };
    this.inner = makeInformer(kc, path, listAndMarkSynced, options.labelSelector);
    this.log = logger('informer').child({ resource: options.name ?? path });
    // The cache keeps the very object its callbacks receive, so trimming it here trims what is cached.
    // managedFields are never read by the operator and are a good part of every object.
    const trim = (obj: T) => {
      if (obj.metadata) delete obj.metadata.managedFields;
      options.transform?.(obj);
    };
    this.inner.on('add', trim);
    this.inner.on('update', trim);
    const touch = () => {
      this.lastActivity = Date.now();
    };
    for (const verb of ['add', 'update', 'delete'] as const) this.inner.on(verb, touch);
    this.inner.on('connect', () => {
      touch();
      this.backoffMs = 0;
    });
    this.inner.on('error', (err) => this.scheduleRestart(err));
    this.staleAfterMs = options.staleAfterMs ?? 5 * 60_000;
  }

  private markSynced(): void {
    if (this.synced) return;
    this.synced = true;
    this.syncWaiters.splice(0).forEach((resolve) => resolve());
  }

  on(verb: 'add' | 'update' | 'delete', handler: Handler<T>): void {
    this.inner.on(verb, handler);
  }

  /**
   * `handler` on an update that changed what a controller reads: the generation (the spec), `extra` (say an
   * annotation, whose change leaves the generation alone), or a deletion begun. Status writes bump only the
   * resourceVersion and are skipped, as controller-runtime's GenerationChangedPredicate does.
   */
  onSpecUpdate(handler: Handler<T>, extra: (obj: T) => string = () => ''): void {
    let seen = new Map<string, string>();
    this.inner.on('update', (obj) => {
      const key = `${obj.metadata?.namespace}/${obj.metadata?.name}`;
      const state = `${obj.metadata?.generation}|${extra(obj)}`;
      if (seen.get(key) !== state || obj.metadata?.deletionTimestamp) handler(obj);
      seen.set(key, state);
      if (seen.size > 100_000) seen = new Map();
    });
  }

  get(name: string, namespace?: string): T | undefined {
    return this.inner.get(name, namespace);
  }

  list(namespace?: string): readonly T[] {
    return this.inner.list(namespace);
  }

  /** Resolves once the first list has landed in the cache. */
  hasSynced(): Promise<void> {
    return this.synced ? Promise.resolve() : new Promise((resolve) => this.syncWaiters.push(resolve));
  }

  async start(): Promise<void> {
    this.stopped = false;
    await this.startInner();
    this.watchdog = setInterval(
      () => {
        if (!this.stopped && !this.restartTimer && Date.now() - this.lastActivity > this.staleAfterMs) {
          this.log.warn('watch silent for too long; restarting it', { silentMs: Date.now() - this.lastActivity });
          this.scheduleRestart(undefined, 0);
        }
      },
      Math.min(this.staleAfterMs, 30_000),
    );
    this.watchdog.unref();
  }

  private async startInner(): Promise<void> {
    this.lastActivity = Date.now();
    try {
      await this.inner.start();
    } catch (err) {
      this.scheduleRestart(err);
    }
  }

  private scheduleRestart(err: unknown, delayMs?: number): void {
    if (this.stopped || this.restartTimer) return;
    this.backoffMs = delayMs ?? Math.min(this.backoffMs ? this.backoffMs * 2 : 500, 30_000);
    if (err) this.log.warn('list/watch failed; restarting', { error: errorMessage(err), retryInMs: this.backoffMs });
    this.restartTimer = setTimeout(async () => {
      this.restartTimer = undefined;
      this.restarts++;
      await this.inner.stop().catch(() => undefined);
      if (!this.stopped) await this.startInner();
    }, this.backoffMs);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.restartTimer);
    clearInterval(this.watchdog);
    this.restartTimer = undefined;
    await this.inner.stop().catch(() => undefined);
  }
}

/**
 * The client's custom-object list calls are typed `Promise<any>`-like (the resource is not known to it); this
 * names the list shape an informer of `T` reads, in one place.
 */
export function customObjectList<T extends KubernetesObject>(list: Promise<unknown>): Promise<KubernetesListObject<T>> {
  return list as Promise<KubernetesListObject<T>>;
}
