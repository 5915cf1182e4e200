import { CoordinationV1Api, type KubeConfig, type V1Lease } from '@kubernetes/client-node';
import { errorMessage, logger } from '../log.ts';
import { isConflict, isNotFound } from './errors.ts';

export interface LeaderElectionOptions {
  namespace: string;
  name: string;
  identity: string;
  leaseDurationMs?: number;
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
}

/**
 * Leader election on a coordination.k8s.io Lease, with client-go's timings and rules: take the lease when it
 * is free or its holder has not renewed it for a lease duration; renew every retry period; give up
 * leadership if renewal has not succeeded within the renew deadline. Every write carries the
 * resourceVersion it read, so two candidates can never both win the same round.
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
  private observed: { holder: string; renewTime: string; at: number } | undefined;

  private readonly options: LeaderElectionOptions;

  constructor(kc: KubeConfig, options: LeaderElectionOptions) {
    this.options = options;
    this.api = kc.makeApiClient(CoordinationV1Api);
    this.log = logger('leader-election').child({
      lease: `${options.namespace}/${options.name}`,
      identity: options.identity,
    });
    this.leaseDurationMs = options.leaseDurationMs ?? 15_000;
    this.renewDeadlineMs = options.renewDeadlineMs ?? 10_000;
    this.retryPeriodMs = options.retryPeriodMs ?? 2_000;
  }

  get isLeader(): boolean {
    return this.leading;
  }

  /**
   * Campaigns until leadership is won, then keeps renewing. `onStoppedLeading` is called once if leadership
   * is lost; like controller-runtime, callers should then exit so a fresh process campaigns again.
   */
  async run(callbacks: { onStartedLeading: () => void; onStoppedLeading: () => void }): Promise<void> {
    while (!this.stopped && !(await this.tryAcquireOrRenew())) await this.sleep(this.retryPeriodMs);
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

  /** A sleep that `stop()` cuts short. */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.wake = resolve;
      this.timer = setTimeout(resolve, ms);
    });
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
          body: { metadata: { name, namespace }, spec: this.desiredLease(0) },
        });
        return true;
      } catch (createErr) {
        if (!isConflict(createErr)) this.log.warn('creating the lease failed', { error: errorMessage(createErr) });
        return false;
      }
    }
    const spec = lease.spec ?? {};
    const holder = spec.holderIdentity ?? '';
    const renewTime = spec.renewTime ? new Date(spec.renewTime).toISOString() : '';
    if (!this.observed || this.observed.holder !== holder || this.observed.renewTime !== renewTime) {
      this.observed = { holder, renewTime, at: Date.now() };
    }
    const durationMs = (spec.leaseDurationSeconds ?? this.leaseDurationMs / 1000) * 1000;
    const heldByOther = holder !== '' && holder !== identity;
    if (heldByOther && Date.now() - this.observed.at < durationMs) return false;

    const transitions = (spec.leaseTransitions ?? 0) + (holder === identity ? 0 : 1);
    const acquireTime = holder === identity && spec.acquireTime ? new Date(spec.acquireTime) : undefined;
    try {
      await this.api.replaceNamespacedLease({
        name,
        namespace,
        body: { metadata: { ...lease.metadata, name, namespace }, spec: this.desiredLease(transitions, acquireTime) },
      });
      if (heldByOther) this.log.info('took over an expired lease', { previousHolder: holder });
      return true;
    } catch (err) {
      if (!isConflict(err)) this.log.warn('updating the lease failed', { error: errorMessage(err) });
      return false;
    }
  }

  /** Stops campaigning; a leader releases the lease so a standby can take over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.wake?.();
    if (!this.leading) return;
    this.leading = false;
    const { namespace, name } = this.options;
    try {
      const lease = await this.api.readNamespacedLease({ name, namespace });
      if (lease.spec?.holderIdentity !== this.options.identity) return;
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
    } catch (err) {
      this.log.warn('releasing the lease failed; a standby will take over when it expires', {
        error: errorMessage(err),
      });
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
