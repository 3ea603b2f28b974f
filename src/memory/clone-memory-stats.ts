/** What one clone's memtap reports about its memory when the clone ends. */
export interface CloneMemoryStats {
  faults: number;
  /** Pages this clone asked for (by request), and pages that reached it by multicast unasked. */
  pagesFetched: number;
  pagesMulticast?: number;
  /** mcdist frames refused as corrupted, malformed or forged. */
  framesRejected?: number;
  /** mcdist requests this clone asked again (retries). */
  retries?: number;
  /** mcdist frames of siblings' pages that reached this clone while it was behind, dropped unread. */
  framesShed?: number;
  pagesZeroFilled: number;
  /** Of those, pages filled because the guest's allocator had them free. */
  pagesFreeFilled?: number;
  /** Of those, pages filled because the guest's allocator handed them out after the clone began. */
  pagesAllocationFilled?: number;
  /** Of pagesFetched, pages asked for ahead of a fault (prefetch). */
  pagesPrefetched?: number;
  bytesReceived: number;
  /** Faults by service time: entry i counts those served in under 2^i µs (the last: the rest). */
  faultServiceHistogram?: number[];
}
