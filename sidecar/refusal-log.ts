import type { Logger } from './log.ts';

export type RefusalReason =
  'no_certificate' | 'unknown_ca' | 'expired' | 'revoked' | 'not_allowed' | 'bad_certificate' | 'protocol';

export interface Refusal {
  listener: number;
  mode: string;
  reason: RefusalReason;
  peer: string;
  detail?: string;
  subject?: string;
  serial?: string;
}

/**
 * One JSON line per refusal, through a token bucket (a burst of `burst`, then `perSecond`), so a flood
 * cannot fill a disk; what the bucket drops is summed up in one line per interval.
 */
export class RefusalLog {
  private tokens: number;
  private last = Date.now();
  private suppressed = 0;
  private readonly timer: NodeJS.Timeout;
  private readonly log: Logger;
  private readonly perSecond: number;
  private readonly burst: number;

  constructor(log: Logger, perSecond = 10, burst = 50) {
    this.log = log;
    this.perSecond = perSecond;
    this.burst = burst;
    this.tokens = burst;
    this.timer = setInterval(() => this.flush(), 10_000);
    this.timer.unref();
  }

  refuse(refusal: Refusal): void {
    const now = Date.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.perSecond);
    this.last = now;
    if (this.tokens < 1) {
      this.suppressed++;
      return;
    }
    this.tokens--;
    this.log.warn('refused', refusal);
  }

  flush(): void {
    if (this.suppressed === 0) return;
    this.log.warn('refusals not logged (rate limit)', { suppressed: this.suppressed });
    this.suppressed = 0;
  }

  close(): void {
    clearInterval(this.timer);
    this.flush();
  }
}
