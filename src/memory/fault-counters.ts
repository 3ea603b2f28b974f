/**
 * What serving a clone's faults costs, counted by the thread that serves them (memtap's Worker on
 * KVM, the pager's on Xen) into a SharedArrayBuffer the owner reads at any time.
 */

/** Fault-service time buckets: bucket i counts faults served in under 2^i µs (the last: the rest). */
export const HISTOGRAM_BUCKETS = 24;

export const Slot = {
  FAULTS: 0,
  PAGES_FETCHED: 1,
  PAGES_ZERO_FILLED: 2,
  BYTES_RECEIVED: 3,
  REQUESTS: 4,
  SERVICE_MICROS: 5,
  /** Pages that arrived by multicast, asked for by a sibling, and were put in before any fault. */
  PAGES_MULTICAST: 6,
  /** mcdist frames refused as corrupted, malformed or forged. */
  FRAMES_REJECTED: 7,
  /** Of PAGES_ZERO_FILLED, those filled because the allocator had them free. */
  PAGES_FREE_FILLED: 8,
  /** Of PAGES_FETCHED, those asked for ahead of a fault (prefetch). */
  PAGES_PREFETCHED: 9,
  /** Of PAGES_ZERO_FILLED, those filled because the guest's allocator handed them out (allocation-hints). */
  PAGES_ALLOCATION_FILLED: 10,
  /** Requests the page source asked again (mcdist retries: a storm shows here). */
  RETRIES: 11,
  /** mcdist frames of siblings' pages dropped unread while the clone was behind. */
  FRAMES_SHED: 12,
  HISTOGRAM: 13,
  WORDS: 13 + HISTOGRAM_BUCKETS,
} as const;

export function faultCounters(): Float64Array {
  return new Float64Array(new SharedArrayBuffer(Slot.WORDS * 8));
}

export interface FaultStats {
  faults: number;
  pagesFetched: number;
  /** Pages received by multicast before this clone faulted on them (mcdist). */
  pagesMulticast: number;
  /** mcdist frames refused as corrupted, malformed or forged. */
  framesRejected: number;
  /** mcdist requests asked again (retries). */
  retries: number;
  /** mcdist frames of siblings' pages dropped unread while this clone was behind: they reached it, it had no time for them. */
  framesShed: number;
  pagesZeroFilled: number;
  /** Of those, pages zero-filled because the guest's allocator had them free (free-pages). */
  pagesFreeFilled: number;
  /** Of those, pages zero-filled because the guest's allocator handed them out after the clone began (allocation-hints). */
  pagesAllocationFilled: number;
  /** Of pagesFetched, pages asked for ahead of a fault (prefetch). */
  pagesPrefetched: number;
  /** Pages put in before the clone first ran. */
  eagerPages: number;
  bytesReceived: number;
  requests: number;
  /** Mean time from reading a fault to its page being in place. */
  meanServiceMicros: number;
  /** Faults served in under `upToMicros` (and at least the previous bucket's bound). */
  faultServiceHistogram: Array<{ upToMicros: number; count: number }>;
}

export function readFaultStats(c: Float64Array, eagerPages: number): FaultStats {
  const histogram = Array.from({ length: HISTOGRAM_BUCKETS }, (_, i) => ({
    upToMicros: i === HISTOGRAM_BUCKETS - 1 ? Infinity : 2 ** i,
    count: c[Slot.HISTOGRAM + i]!,
  }));
  const last = histogram.findLastIndex((b) => b.count > 0);
  const faults = c[Slot.FAULTS]!;
  return {
    faults,
    pagesFetched: c[Slot.PAGES_FETCHED]!,
    pagesMulticast: c[Slot.PAGES_MULTICAST]!,
    framesRejected: c[Slot.FRAMES_REJECTED]!,
    retries: c[Slot.RETRIES]!,
    framesShed: c[Slot.FRAMES_SHED]!,
    pagesZeroFilled: c[Slot.PAGES_ZERO_FILLED]!,
    pagesFreeFilled: c[Slot.PAGES_FREE_FILLED]!,
    pagesAllocationFilled: c[Slot.PAGES_ALLOCATION_FILLED]!,
    pagesPrefetched: c[Slot.PAGES_PREFETCHED]!,
    eagerPages,
    bytesReceived: c[Slot.BYTES_RECEIVED]!,
    requests: c[Slot.REQUESTS]!,
    meanServiceMicros: faults === 0 ? 0 : c[Slot.SERVICE_MICROS]! / faults,
    faultServiceHistogram: histogram.slice(0, last + 1),
  };
}
