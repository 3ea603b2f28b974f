/**
 * What a receiver that measures its own pace reports while frames go missing on the way (additive
 * increase is too slow here; this is multiplicative both ways, like TCP's window after a loss):
 * each loss halves a cap on the reported rate, each report without a loss raises the cap by a
 * quarter, and once the cap is above what the receiver can handle it goes. A link slower than the
 * server's pace (emulated hosts, a busy bridge) then loses a frame now and then instead of most
 * answers.
 */
const GROWTH = 1.25;

export class LossRateCap {
  private cap: number | undefined;
  private lossSinceReport = false;

  constructor(
    /** The slowest pace the server takes (pages/s). */
    private readonly floor: number,
    /** The cap's first value before halving, when nothing was reported yet (the server then sends unpaced). */
    private readonly unpaced: number,
  ) {}

  /** A loss: the cap halves, from itself or else from the last rate reported. Returns the rate to report now. */
  lost(lastReported: number | undefined): number {
    this.cap = Math.max(this.floor, Math.floor((this.cap ?? lastReported ?? this.unpaced) / 2));
    this.lossSinceReport = true;
    return this.cap;
  }

  /** The rate to report in place of `measured` (undefined: nothing measured since the last report). */
  report(measured: number | undefined): number | undefined {
    if (this.cap !== undefined && !this.lossSinceReport) {
      this.cap = Math.ceil(this.cap * GROWTH);
      if (measured !== undefined && this.cap >= measured) this.cap = undefined;
    }
    this.lossSinceReport = false;
    if (this.cap === undefined) return measured;
    return measured === undefined ? this.cap : Math.min(this.cap, measured);
  }

  /** The cap in force (pages/s), if any. */
  get current(): number | undefined {
    return this.cap;
  }
}
