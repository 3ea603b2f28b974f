/**
 * How a clone's page faults are served, whatever delivers them (userfaultfd on KVM: memtap; the
 * paging ring on Xen: the pager) and however a page is put in place (a PageSink): a page the
 * descriptor calls zero, or the guest's allocator handed out since the clone began, is
 * zero-filled here; any other is fetched from the page source, with the pages after it when the
 * prefetch heuristic is on. It counts what each fault cost (fault-counters.ts).
 */
import { type AllocationHints, isAllocated } from "../guest-memory/allocation-hints.ts";
import { HISTOGRAM_BUCKETS, Slot } from "./fault-counters.ts";
import { HEADER_SIZE, MAX_PAGES_PER_REQUEST, pageDataSize } from "./page-protocol.ts";
import type { PageSource } from "./page-source.ts";
import { fetchEach, inRequests } from "./page-requests.ts";
import { hasPage } from "../guest-memory/page-bits.ts";

/** Puts pages in place in a clone's memory. Page numbers are the frozen image's (backing pages). */
export interface PageSink {
  /** Puts `data` into `page`; false when the page was there already (its waiter is let go on). */
  install(page: number, data: Uint8Array): boolean;
  /** Fills `page` with zeros for an access that writes or reads; false when it was there already. */
  zero(page: number, write: boolean): boolean;
  /** Zero-fills `count` pages from `page` in one step; false when one of them was there (the caller then fills them one by one). */
  zeroRun?(page: number, count: number): boolean;
  /** A page already in place (it arrived unasked): lets the fault's waiter go on. */
  release(page: number): void;
}

export interface FaultPlan {
  pageCount: number;
  /** Bit i (byte i>>3, bit i&7) set when page i may be non-zero (the descriptor's bitmap, less what heuristics spare). */
  nonZeroPages: Uint8Array;
  /** Bit i set: page i is zero-filled because it was free (free-pages), for the counters. */
  freePages: Uint8Array;
  /** Ask for the pages after a fault in the same round (the prefetch heuristic). */
  prefetch: boolean;
  /** Pages the guest's allocator handed out (allocation-hints): zero-filled instead of fetched. */
  allocationHints: AllocationHints | undefined;
  /** Float64Array over a SharedArrayBuffer of Slot.WORDS entries. */
  counters: Float64Array;
}

/** Most pages prefetched after one fault, where the fault waits for them all. */
const MAX_PREFETCH_WINDOW = 32;
/**
 * Where it does not (PageSource.fetchAhead: pages stream in, the fault goes on with its own), the
 * window fills a whole request: a wider one costs the fault nothing, and halves the faults of a
 * sequential reader.
 */
const MAX_AHEAD_WINDOW = MAX_PAGES_PER_REQUEST - 1;
/** Most pages zero-filled by one fault on a page the clone fills itself. */
const MAX_ZERO_RUN = 512;
/** How often frames read while idle are added to the counters (a fetch and the end always add them). */
const COUNT_EVERY_MS = 100;

export class FaultService {
  /** Pages put in unasked (mcdist): a fault read before they arrived only needs a release. */
  private readonly arrived: Uint8Array;
  /** Pages asked for ahead of a fault and not in yet (fetchAhead): fetched when they arrive, not multicast. */
  private readonly askedAhead: Uint8Array;
  private source!: PageSource;
  private lastFault = -2;
  private window = 0;
  private countedAt = 0;

  constructor(
    private readonly plan: FaultPlan,
    private readonly sink: PageSink,
  ) {
    this.arrived = new Uint8Array(plan.pageCount);
    this.askedAhead = new Uint8Array(plan.pageCount);
  }

  attach(source: PageSource): void {
    this.source = source;
  }

  /** A page a sibling asked for, or this clone ahead of a fault: put it in now, unless this clone has it already. */
  installArrived(page: number, data: Uint8Array): void {
    if (page < 0 || page >= this.plan.pageCount || this.arrived[page] === 1) return;
    this.arrived[page] = 1;
    if (!this.sink.install(page, data)) return;
    this.plan.counters[this.askedAhead[page] === 1 ? Slot.PAGES_FETCHED : Slot.PAGES_MULTICAST]!++;
  }

  /** Puts `pages` in place before the clone runs (pages it must not fault on): fetched, or zero-filled where the plan says zero. */
  preload(pages: number[]): void {
    const fetch: number[] = [];
    for (const page of pages) {
      if (page < 0 || page >= this.plan.pageCount || this.arrived[page] === 1) continue;
      if (this.mayBeNonZero(page)) fetch.push(page);
      else {
        this.sink.zero(page, true);
        this.arrived[page] = 1;
      }
    }
    this.fetchInRequests(fetch);
  }

  /** The source's fd turned readable while no fault waited. */
  sourceReadable(): void {
    this.source.idle();
    // Frames wake the serving loop one or a few at a time: the counters are refreshed now and then, not per wake.
    if (Date.now() - this.countedAt >= COUNT_EVERY_MS) {
      this.countBytes();
      this.countedAt = Date.now();
    }
  }

  /** Serves one batch of faults: page → whether any access to it writes. `startedAt`: when they were read (performance.now()). */
  serve(faults: Map<number, boolean>, startedAt: number): void {
    const fetch: number[] = [];
    for (const [page, write] of faults) {
      if (this.arrived[page] === 1) this.sink.release(page);
      else if (this.mayBeNonZero(page) && this.handedOut(page)) this.zeroFill(page, write, Slot.PAGES_ALLOCATION_FILLED);
      else if (this.mayBeNonZero(page)) fetch.push(page);
      else if (this.plan.prefetch) this.zeroFillRun(page, write);
      else this.zeroFill(page, write);
    }
    const prefetched = this.plan.prefetch ? this.prefetchAround(fetch) : [];
    this.fetchWithPrefetch(fetch, prefetched);
    this.plan.counters[Slot.PAGES_PREFETCHED]! += prefetched.length;
    this.record(faults.size, (performance.now() - startedAt) * 1000);
  }

  /**
   * Prefetch: pages after a fetched fault that the clone would fetch too, asked for in the same
   * round. The window doubles while faults stay sequential (each one within reach of the last)
   * and closes on a fault elsewhere.
   */
  private prefetchAround(fetch: number[]): number[] {
    const taken = new Set(fetch);
    const extra: number[] = [];
    const widest = this.source.fetchAhead ? MAX_AHEAD_WINDOW : MAX_PREFETCH_WINDOW;
    for (const page of fetch) {
      // On its way, asked with an earlier fault: that fault's window goes on.
      if (this.askedAhead[page] === 1) continue;
      const sequential = page > this.lastFault && page <= this.lastFault + this.window + 1;
      this.window = sequential ? Math.min(widest, Math.max(1, this.window * 2)) : 0;
      this.lastFault = page;
      for (let next = page + 1; next <= page + this.window && next < this.plan.pageCount; next++) {
        if (taken.has(next) || this.arrived[next] === 1 || this.askedAhead[next] === 1 || !this.mayBeNonZero(next) || this.handedOut(next))
          continue;
        taken.add(next);
        extra.push(next);
      }
      // Where the window reached: a fault there is still "sequential".
      if (this.window > 0) this.lastFault = page + this.window;
    }
    return extra;
  }

  private mayBeNonZero(page: number): boolean {
    return hasPage(this.plan.nonZeroPages, page);
  }

  /** Whether the guest's allocator handed the page out since the clone began (allocation-hints). */
  private handedOut(page: number): boolean {
    return this.plan.allocationHints !== undefined && isAllocated(this.plan.allocationHints, page);
  }

  /** `because` counts a page the plan would have fetched but for a heuristic of the moment. */
  private zeroFill(page: number, write: boolean, because?: number): void {
    if (!this.sink.zero(page, write)) return;
    this.countZeroFilled(page);
    if (because !== undefined) this.plan.counters[because]!++;
  }

  private countZeroFilled(page: number): void {
    this.plan.counters[Slot.PAGES_ZERO_FILLED]!++;
    if (hasPage(this.plan.freePages, page)) this.plan.counters[Slot.PAGES_FREE_FILLED]!++;
  }

  /** With prefetch: a fault on a page the clone fills itself fills the run of such pages after it at once, where the sink can. */
  private zeroFillRun(page: number, write: boolean): void {
    if (!this.sink.zeroRun) return this.zeroFill(page, write);
    let run = 1;
    while (run < MAX_ZERO_RUN && page + run < this.plan.pageCount && !this.mayBeNonZero(page + run) && this.arrived[page + run] !== 1)
      run++;
    if (run === 1) return this.zeroFill(page, write);
    if (!this.sink.zeroRun(page, run)) {
      // Some page of the run was there already: the rest one by one.
      for (let p = page; p < page + run; p++) this.zeroFill(p, false);
      return;
    }
    // Filled now: a later run stops here instead of filling them again.
    for (let p = page; p < page + run; p++) {
      this.arrived[p] = 1;
      this.countZeroFilled(p);
    }
  }

  /**
   * The faulted pages and the pages prefetched after them. Where pages stream in (fetchAhead) and
   * all fit one request, the faults wait only for their own and the rest arrive through
   * installArrived; elsewhere all are fetched, a request at a time.
   */
  private fetchWithPrefetch(fetch: number[], prefetched: number[]): void {
    if (this.source.fetchAhead && fetch.length > 0 && fetch.length + prefetched.length <= MAX_PAGES_PER_REQUEST) {
      for (const page of prefetched) this.askedAhead[page] = 1;
      return this.install(fetch, this.source.fetchAhead(fetch, prefetched));
    }
    this.fetchInRequests([...fetch, ...prefetched]);
  }

  /** Fetches `pages` and puts them in, in requests of at most MAX_PAGES_PER_REQUEST (several on their way where the source can). */
  private fetchInRequests(pages: number[]): void {
    fetchEach(this.source, inRequests(pages), (request, contents) => this.install(request, contents));
  }

  /** Puts fetched `pages` in place and counts the request. */
  private install(pages: number[], contents: Uint8Array[]): void {
    const c = this.plan.counters;
    c[Slot.REQUESTS]!++;
    if (this.source.bytesReceived) this.countBytes();
    else c[Slot.BYTES_RECEIVED]! += HEADER_SIZE + pageDataSize(pages.length);
    pages.forEach((page, i) => {
      this.arrived[page] = 1;
      this.sink.install(page, contents[i]!);
    });
    c[Slot.PAGES_FETCHED]! += pages.length;
  }

  /** The source's own byte, rejection and retry counts (mcdist), copied into the counters. */
  countBytes(): void {
    if (!this.source) return;
    const c = this.plan.counters;
    if (this.source.bytesReceived) c[Slot.BYTES_RECEIVED] = this.source.bytesReceived();
    if (this.source.framesRejected) c[Slot.FRAMES_REJECTED] = this.source.framesRejected();
    if (this.source.retries) c[Slot.RETRIES] = this.source.retries();
    if (this.source.framesShed) c[Slot.FRAMES_SHED] = this.source.framesShed();
  }

  private record(faults: number, micros: number): void {
    const c = this.plan.counters;
    c[Slot.FAULTS]! += faults;
    c[Slot.SERVICE_MICROS]! += micros * faults;
    const bucket = micros < 1 ? 0 : Math.min(HISTOGRAM_BUCKETS - 1, Math.floor(Math.log2(micros)) + 1);
    c[Slot.HISTOGRAM + bucket]! += faults;
  }
}
