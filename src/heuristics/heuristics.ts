/**
 * Avoidance heuristics: pages a clone never fetches because it knows their contents (or will
 * overwrite them before reading). Each can be switched off alone (`--no-heuristic NAME`, or all
 * with `--no-heuristics`) so its effect can be measured. So far:
 *
 *   known-zero   pages the descriptor's bitmap says are zero are zero-filled locally.
 *   free-pages   pages the guest's allocator had free when the clone was made are zero-filled
 *                locally: whoever allocates one writes it before reading (alloc.h's contract).
 *   allocation-hints  pages the guest's allocator hands out after the clone began (it says so by
 *                SF_HC_ALLOCATED) are zero-filled locally, for the same reason: this covers pages
 *                the parent had in use that the clone freed and allocated again.
 *   prefetch     a fault's following pages that the clone would fetch too come in the same
 *                round (the window grows while faults stay sequential), and a fault on a page the
 *                clone fills itself fills the run of such pages after it: fewer faults, not fewer pages.
 */
import { SnowflockError } from "../errors.ts";
import { PageBitmap } from "../wasm/page-bitmap.ts";

export const HEURISTICS = ["known-zero", "free-pages", "allocation-hints", "prefetch"] as const;
export type Heuristic = (typeof HEURISTICS)[number];

export function parseHeuristics(names: readonly string[]): Heuristic[] {
  const unknown = names.filter((n) => !(HEURISTICS as readonly string[]).includes(n));
  if (unknown.length > 0)
    throw new SnowflockError("USAGE", `unknown heuristic '${unknown[0]}'`, `the heuristics are: ${HEURISTICS.join(", ")}`);
  return [...new Set(names)] as Heuristic[];
}

export interface FetchPlan {
  /** Bit i set: page i is fetched on its first touch; clear: zero-filled locally. */
  fetch: Uint8Array;
  /** Bit i set: page i would be fetched but for free-pages (for the counters). */
  spareByFreePages: Uint8Array;
}

/** Which pages a clone fetches, from the descriptor's bitmaps and the heuristics left on (bitmap work in the WASM kernel). */
export function planFetches(nonZeroPages: Uint8Array, freePages: Uint8Array | undefined, off: readonly Heuristic[]): FetchPlan {
  using fetch = PageBitmap.fromBytes(nonZeroPages);
  if (off.includes("known-zero")) fetch.setAll();
  if (!freePages || off.includes("free-pages"))
    return { fetch: fetch.toBytes(), spareByFreePages: new Uint8Array(nonZeroPages.byteLength) };
  using free = PageBitmap.fromBytes(freePages);
  using spared = fetch.clone().and(free);
  fetch.andNot(free);
  return { fetch: fetch.toBytes(), spareByFreePages: spared.toBytes() };
}
