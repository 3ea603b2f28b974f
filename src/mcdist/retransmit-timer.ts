/**
 * When a clone asks the server again for pages that have not come: TCP's retransmission timeout
 * (RFC 6298) over the request → first-page round trip. The round trip includes the server's queue
 * and the clone's own descheduling, so a loaded family waits longer before asking again instead of
 * re-asking for pages already on their way. Each timeout without progress doubles the wait; pages
 * arriving again (the server is there, frames were just lost) bring it back to the estimate, which
 * only samples from requests sent once update (Karn's rule).
 */
import { scaledTimeout } from "../timeouts.ts";

/** The wait before the first sample (scaled like every wait on another party, see timeouts.ts). */
export const INITIAL_RTO_MS = scaledTimeout(100);
export const MIN_RTO_MS = scaledTimeout(10);
export const MAX_RTO_MS = scaledTimeout(2000);

export class RetransmitTimer {
  private smoothed: number | undefined;
  private variation = 0;
  private backedOff = 0;

  constructor(private readonly maxMs = MAX_RTO_MS) {}

  /** How long to wait for progress before asking again. */
  get timeoutMs(): number {
    const base = this.smoothed === undefined ? INITIAL_RTO_MS : this.smoothed + Math.max(1, 4 * this.variation);
    return Math.min(this.maxMs, Math.max(MIN_RTO_MS, base) * 2 ** this.backedOff);
  }

  /** A round trip measured on a request that was sent once. */
  sample(ms: number): void {
    if (this.smoothed === undefined) {
      this.smoothed = ms;
      this.variation = ms / 2;
    } else {
      this.variation = 0.75 * this.variation + 0.25 * Math.abs(this.smoothed - ms);
      this.smoothed = 0.875 * this.smoothed + 0.125 * ms;
    }
    this.backedOff = 0;
  }

  /** Asked-for pages arrived: the server answers, so the wait goes back to the estimate. */
  progress(): void {
    this.backedOff = 0;
  }

  /** The wait ran out with nothing new: wait twice as long next time (up to the maximum). */
  backOff(): void {
    if (this.timeoutMs < this.maxMs) this.backedOff++;
  }
}
