import {
  CoordinationV1Api,
  type KubeConfig,
  type V1Lease,
  type V1LeaseSpec,
  type V1OwnerReference,
  Watch,
} from '@kubernetes/client-node';
import { errorMessage, logger } from '../log.ts';
import { isConflict, isNotFound, statusCode } from './errors.ts';
import { withOwners } from './owner.ts';

/** client-go's defaults, which `mtls-operator controller` uses: a standby takes over once the holder has not
 * renewed for a lease duration; a leader renews every retry period and steps down after the renew deadline. */
export const LEADER_ELECTION_DEFAULTS = {
  leaseDurationMs: 15_000,
  renewDeadlineMs: 10_000,
  retryPeriodMs: 2_000,
} as const;

export interface LeaderElectionOptions {
  namespace: string;
  name: string;
  identity: string;
  leaseDurationMs?: number;
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
  /** Set on the Lease (e.g. the operator's Deployment), so it goes when its owner is deleted. */
  ownerReferences?: V1OwnerReference[];
}

/**
 * Leader election on a coordination.k8s.io Lease, with client-go's timings and rules: take the lease when it
 * is free or its holder has not renewed it for a lease duration; renew every retry period; give up
 * leadership if renewal has not succeeded within the renew deadline. Every write carries the
 * resourceVersion it read, so two candidates can never both win the same round.
 *
 * Unlike client-go, a standby also watches the Lease: it notes each renewal when it happens (not up to a
 * retry period later, at its next poll) and tries again the moment the lease it saw would expire (not at the
 * next retry tick), and at once when the leader releases it. A SIGKILLed leader is so replaced a lease
 * duration after its last renewal, instead of up to a lease duration plus two retry periods. The polls stay:
 * the watch only makes them better informed, and a broken watch leaves client-go's behaviour.
 */
export class LeaderElector {
  private readonly api: CoordinationV1Api;
  private readonly log;
  private readonly leaseDurationMs: number;
  private readonly renewDeadlineMs: number;
  private readonly retryPeriodMs: number;
  private stopped = false;
  private leading = false;
  private timer: NodeJS.Timeout | undefined;
  /** When we last saw the observed lease change (by our clock: holders' clocks are not trusted). */
  private observed: { holder: string; renewTime: string; at: number; durationMs: number } | undefined;
  private readonly kc: KubeConfig;
  private watchAbort: AbortController | undefined;
  private watchTimer: NodeJS.Timeout | undefined;
  private watching = false;
  private campaigning = false;
  /** The campaign-and-renew loop of `run()`, awaited by `stop()` so nothing is written after the release. */
  private loop: Promise<void> | undefined;

  private readonly options: LeaderElectionOptions;

  constructor(kc: KubeConfig, options: LeaderElectionOptions) {
    this.options = options;
    this.kc = kc;
    this.api = kc.makeApiClient(CoordinationV1Api);
    this.log = logger('leader-election').child({
      lease: `${options.namespace}/${options.name}`,
      identity: options.identity,
    });
    this.leaseDurationMs = options.leaseDurationMs ?? LEADER_ELECTION_DEFAULTS.leaseDurationMs;
    this.renewDeadlineMs = options.renewDeadlineMs ?? LEADER_ELECTION_DEFAULTS.renewDeadlineMs;
    this.retryPeriodMs = options.retryPeriodMs ?? LEADER_ELECTION_DEFAULTS.retryPeriodMs;
  }

  get isLeader(): boolean {
    return this.leading;
  }

  /**
   * Campaigns until leadership is won, then keeps renewing. `onStartedLeading` is not called once `stop()`
   * has been, even if the round in flight won the lease (`stop()` then releases it). `onStoppedLeading` is
   * called once if leadership is lost; like controller-runtime, callers should then exit so a fresh process
   * campaigns again.
   */
  run(callbacks: { onStartedLeading: () => void; onStoppedLeading: () => void }): Promise<void> {
    this.loop ??= this.campaignAndLead(callbacks);
    return this.loop;
  }

  private async campaignAndLead(callbacks: { onStartedLeading: () => void; onStoppedLeading: () => void }) {
    this.campaigning = true;
    this.watchLease();
    while (!this.stopped && !(await this.tryAcquireOrRenew())) await this.sleep(this.campaignDelayMs());
    this.campaigning = false;
    this.stopWatching();
    if (this.stopped) return;
    this.leading = true;
    this.log.info('became leader');
    callbacks.onStartedLeading();
    let lastRenew = Date.now();
    while (!this.stopped) {
      await this.sleep(this.retryPeriodMs);
      if (this.stopped) break;
      if (await this.tryAcquireOrRenew()) {
        lastRenew = Date.now();
      } else if (Date.now() - lastRenew > this.renewDeadlineMs) {
        this.leading = false;
        this.log.error('lost leadership: could not renew the lease within the renew deadline', {
          renewDeadlineMs: this.renewDeadlineMs,
        });
        callbacks.onStoppedLeading();
        return;
      }
    }
  }

  private wake: (() => void) | undefined;

  /** A sleep that `stop()` (or, for a standby, a released lease) cuts short. */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(this.timer);
        this.wake = undefined;
        resolve();
      };
      this.wake = done;
      this.timer = setTimeout(done, ms);
    });
  }

  /** A standby's next attempt: when the lease it saw expires, if that is sooner than a retry period. */
  private campaignDelayMs(): number {
    const seen = this.observed;
    if (!seen || seen.holder === '' || seen.holder === this.options.identity) return this.retryPeriodMs;
    const untilExpiry = seen.at + seen.durationMs - Date.now();
    // Already expired: the attempt just made failed (a conflict, an API error), so wait a retry period.
    return untilExpiry > 0 ? Math.min(this.retryPeriodMs, untilExpiry + 1) : this.retryPeriodMs;
  }

  /** Notes a lease as seen now, if its holder or renewal changed since it was last seen. */
  private observe(spec: V1LeaseSpec): void {
    const holder = spec.holderIdentity ?? '';
    const renewTime = spec.renewTime ? new Date(spec.renewTime).toISOString() : '';
    if (!this.observed || this.observed.holder !== holder || this.observed.renewTime !== renewTime) {
      const durationMs = (spec.leaseDurationSeconds ?? this.leaseDurationMs / 1000) * 1000;
      this.observed = { holder, renewTime, at: Date.now(), durationMs };
    }
  }

  /** While campaigning: every change of the Lease as it happens; reconnects after a retry period. */
  private watchLease(): void {
    if (this.stopped || !this.campaigning || this.watching) return;
    this.watching = true;
    const { namespace, name } = this.options;
    const again = () => {
      this.watching = false;
      this.watchAbort = undefined;
      if (!this.stopped && this.campaigning) this.watchTimer = setTimeout(() => this.watchLease(), this.retryPeriodMs);
    };
    new Watch(this.kc)
      .watch(
        `/apis/coordination.k8s.io/v1/namespaces/${namespace}/leases`,
        { fieldSelector: `metadata.name=${name}` },
        (phase: string, lease: V1Lease) => {
          if (phase !== 'ADDED' && phase !== 'MODIFIED') return;
          this.observe(lease.spec ?? {});
          if (this.observed?.holder === '') this.wake?.(); // released: campaign now
        },
        () => again(),
      )
      .then(
        (abort) => {
          if (this.watching) this.watchAbort = abort;
          else abort.abort();
        },
        () => again(),
      );
  }

  private stopWatching(): void {
    this.watching = false;
    clearTimeout(this.watchTimer);
    this.watchAbort?.abort();
    this.watchAbort = undefined;
  }

  private desiredLease(transitions: number, acquireTime?: Date): V1Lease['spec'] {
    const now = new Date();
    return {
      holderIdentity: this.options.identity,
      leaseDurationSeconds: Math.ceil(this.leaseDurationMs / 1000),
      acquireTime: microTime(acquireTime ?? now),
      renewTime: microTime(now),
      leaseTransitions: transitions,
    };
  }

  /** One election round; true if we hold the lease afterwards. */
  private async tryAcquireOrRenew(): Promise<boolean> {
    const { namespace, name, identity } = this.options;
    let lease: V1Lease;
    try {
      lease = await this.api.readNamespacedLease({ name, namespace });
    } catch (err) {
      if (!isNotFound(err)) {
        this.log.warn('reading the lease failed', { error: errorMessage(err) });
        return false;
      }
      try {
        await this.api.createNamespacedLease({
          namespace,
          body: {
            metadata: { name, namespace, ownerReferences: this.options.ownerReferences },
            spec: this.desiredLease(0),
          },
        });
        return true;
      } catch (createErr) {
        if (!isConflict(createErr)) this.log.warn('creating the lease failed', { error: errorMessage(createErr) });
        return false;
      }
    }
    const spec = lease.spec ?? {};
    const holder = spec.holderIdentity ?? '';
    this.observe(spec);
    const heldByOther = holder !== '' && holder !== identity;
    if (heldByOther && Date.now() - this.observed!.at < this.observed!.durationMs) return false;

    const transitions = (spec.leaseTransitions ?? 0) + (holder === identity ? 0 : 1);
    const acquireTime = holder === identity && spec.acquireTime ? new Date(spec.acquireTime) : undefined;
    try {
      await this.api.replaceNamespacedLease({
        name,
        namespace,
        body: {
          metadata: {
            ...lease.metadata,
            name,
            namespace,
            ownerReferences: withOwners(lease.metadata?.ownerReferences, this.options.ownerReferences),
          },
          spec: this.desiredLease(transitions, acquireTime),
        },
      });
      if (heldByOther) this.log.info('took over an expired lease', { previousHolder: holder });
      return true;
    } catch (err) {
      if (!isConflict(err)) this.log.warn('updating the lease failed', { error: errorMessage(err) });
      return false;
    }
  }

  /**
   * Stops campaigning and renewing, waits for the round in flight (so no renewal or acquisition lands after
   * the release), runs `beforeRelease` (a leader stops its controller there, while the lease still guards
   * it), then releases the lease if it names us: holder cleared and a one-second duration, so a standby, which
   * watches the Lease, takes over at once instead of a lease duration later. Also a standby that won the
   * lease in the round `stop()` cut short releases it, instead of leaving a lease that names a dead process.
   */
  async stop(beforeRelease?: () => Promise<void>): Promise<void> {
    this.stopped = true;
    this.stopWatching();
    clearTimeout(this.timer);
    this.wake?.();
    const loop = this.loop;
    if (loop) {
      let timer: NodeJS.Timeout | undefined;
      const settled = await Promise.race([
        loop.then(() => true),
        new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), this.renewDeadlineMs))),
      ]);
      clearTimeout(timer);
      if (!settled) this.log.warn('the last election round did not finish in time; releasing the lease anyway');
    }
    try {
      await beforeRelease?.();
    } finally {
      this.leading = false;
      if (loop) await this.release();
    }
  }

  /** Hands the lease back if it names us; a conflict or a transport error is retried twice. */
  private async release(): Promise<void> {
    const { namespace, name, identity } = this.options;
    for (let attempt = 1; ; attempt++) {
      try {
        const lease = await this.api.readNamespacedLease({ name, namespace });
        if (lease.spec?.holderIdentity !== identity) return;
        await this.api.replaceNamespacedLease({
          name,
          namespace,
          body: {
            metadata: lease.metadata,
            spec: {
              ...lease.spec,
              holderIdentity: '',
              leaseDurationSeconds: 1,
              acquireTime: microTime(new Date(lease.spec.acquireTime ?? Date.now())),
              renewTime: microTime(new Date()),
            },
          },
        });
        this.log.info('released the lease');
        return;
      } catch (err) {
        if (isNotFound(err)) return;
        const status = statusCode(err);
        const retriable = status === undefined || status === 409 || status === 429 || status >= 500;
        if (retriable && attempt < 3) {
          await new Promise((resolve) => setTimeout(resolve, 100 * attempt));
          continue;
        }
        this.log.warn('releasing the lease failed; a standby takes over when it expires', {
          error: errorMessage(err),
        });
        return;
      }
    }
  }
}

/**
 * Lease times are metav1.MicroTime (six fractional digits); client-node would send a Date with three, which
 * the API server refuses. Its serializer passes unknown types through, so hand it the string.
 */
function microTime(date: Date): Date {
  return date.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z') as unknown as Date;
}
