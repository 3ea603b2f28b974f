/**
 * Garbage collection for a Worker whose loop never returns to its event loop (a vCPU in KVM_RUN,
 * memtap on its userfaultfd, the mcdist server on its socket). Bun schedules collections from the
 * event loop, so such a thread collects itself between blocking calls: else the small garbage of
 * every exit, fault or frame grows the process for as long as the loop runs (a `serve` guest
 * printing every 100 ms grew its VMM by ~30 KiB/s). At its first collection a ready VMM's thread
 * lets the JIT compile as usual again (jit-policy.ts): the loop has run a while by then.
 */
import { releaseStartJit } from "./jit-policy.ts";

const COLLECT_EVERY_MS = 5000;

export class WorkerCollector {
  // Date.now(), not performance.now(): this runs per exit or frame, and is the cheaper clock under emulation.
  private due = Date.now() + COLLECT_EVERY_MS;

  /** Call between blocking calls: collects when COLLECT_EVERY_MS have passed since the last time. */
  tick(): void {
    if (Date.now() < this.due) return;
    Bun.gc(true);
    releaseStartJit();
    this.due = Date.now() + COLLECT_EVERY_MS;
  }
}
