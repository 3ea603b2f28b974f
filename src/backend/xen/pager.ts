/**
 * The owner's side of a Xen pager (pager-worker.ts): attach() makes a Worker the pager of a clone
 * shell and pages its RAM out; serve() hands it the page source once a fork has one and resolves
 * when the domain may run; stats() reads its counters (fault-counters.ts, the same as memtap's).
 */
import { SnowflockError } from "../../errors.ts";
import { type FaultStats, faultCounters, readFaultStats } from "../../memory/fault-counters.ts";
import { scaledTimeout } from "../../timeouts.ts";
import { WorkerLink } from "../../worker-link.ts";
import type { PagerAttached, PagerNote, PagerServe, PagerStop } from "./pager-protocol.ts";

/** See VCPU_WORKER_URL in machine.ts: a compiled executable keeps the entry's path from the project root. */
const PAGER_WORKER_URL = import.meta.url.includes("/$bunfs/")
  ? new URL("./src/backend/xen/pager-worker.ts", import.meta.url).href
  : new URL("./pager-worker.ts", import.meta.url).href;

const STOP_TIMEOUT_MS = scaledTimeout(3000);

export interface XenPager {
  readonly domid: number;
  /** What paging the shell out did: frames paged out, frames Xen kept present, how long it took. */
  readonly attached: PagerAttached;
  /** Starts serving faults from `plan`'s page source; resolves once the eager frames are in and the domain may run. */
  serve(plan: Omit<PagerServe, "kind">, timeoutMs: number): Promise<{ loadMs: number }>;
  stats(): FaultStats;
  /** Settles with the reason if the pager fails; never settles otherwise. */
  readonly failed: Promise<Error>;
  /** Ends the Worker (the domain's faults then go unanswered: destroy the domain first, or with it). */
  stop(): Promise<void>;
}

/**
 * Attaches a pager to domain `domid` (a paused clone shell with memory = maxmem) and pages out its
 * frames [0, ramPages). `progress` hears how far the paging out is.
 */
export async function attachPager(
  domid: number,
  ramPages: number,
  timeoutMs: number,
  progress?: (done: number, total: number) => void,
): Promise<XenPager> {
  const counters = faultCounters();
  let serving: PromiseWithResolvers<{ loadMs: number }> | undefined;
  const link = new WorkerLink<PagerAttached>(PAGER_WORKER_URL, "the Xen pager", (value) => {
    const note = value as PagerNote;
    if (note.kind === "progress") progress?.(note.done, note.total);
    else serving?.resolve({ loadMs: note.loadMs });
  });
  link.failed.then((error) => serving?.reject(error));
  const stop = () => {
    // A pager kept for a ready shell is not in its serving loop: the stop eventfd alone would not end it.
    if (!serving) link.worker.postMessage({ kind: "stop" } satisfies PagerStop);
    return link.finish(STOP_TIMEOUT_MS);
  };
  link.worker.postMessage({ kind: "attach", domid, ramPages, stopFd: link.stopFd, counters });
  let attached: PagerAttached;
  try {
    attached = await link.whenReady(timeoutMs, `the Xen pager did not page out domain ${domid} within ${Math.round(timeoutMs / 1000)} s`);
  } catch (error) {
    await stop();
    throw error;
  }
  let eagerFrames = 0;
  return {
    domid,
    attached,
    async serve(plan, serveTimeoutMs) {
      if (serving) throw new SnowflockError("INTERNAL", `the pager of domain ${domid} serves already`);
      serving = Promise.withResolvers();
      eagerFrames = plan.eagerFrames.length;
      link.worker.postMessage({ kind: "serve", ...plan } satisfies PagerServe);
      let timer: Timer | undefined;
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new SnowflockError("MEMORY", `the Xen pager of domain ${domid} did not load its eager frames within ${serveTimeoutMs} ms`),
            ),
          serveTimeoutMs,
        );
      });
      try {
        return await Promise.race([serving.promise, late]);
      } finally {
        clearTimeout(timer);
      }
    },
    stats: () => readFaultStats(counters, eagerFrames),
    failed: link.failed,
    stop,
  };
}
