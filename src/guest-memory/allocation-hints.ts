/**
 * The allocation-hints bitmap: one bit per page of guest memory, shared between a clone's vCPU
 * threads (which set bits when the guest's allocator hands pages out, SF_HC_ALLOCATED) and its
 * memtap thread (which zero-fills such a page instead of fetching it). A vCPU sets the bits before
 * it resumes the guest, so they are visible before the guest can touch the pages.
 */
import { PAGE_SIZE } from "./layout.ts";

export type AllocationHints = Int32Array;

export function createAllocationHints(memoryBytes: number): AllocationHints {
  return new Int32Array(new SharedArrayBuffer(Math.ceil(memoryBytes / PAGE_SIZE / 32) * 4));
}

/** Marks `pages` pages from byte `offset` of guest memory as handed out by the guest's allocator. */
export function markAllocated(hints: AllocationHints, offset: number, pages: number): void {
  const first = offset / PAGE_SIZE;
  const end = Math.min(first + pages, hints.length * 32);
  for (let page = first; page < end; ) {
    const word = page >>> 5;
    const from = page & 31;
    const to = Math.min(32, from + (end - page));
    const mask = to - from === 32 ? -1 : ((1 << (to - from)) - 1) << from;
    Atomics.or(hints, word, mask);
    page += to - from;
  }
}

export function isAllocated(hints: AllocationHints, page: number): boolean {
  return ((Atomics.load(hints, page >>> 5) >>> (page & 31)) & 1) !== 0;
}
