/**
 * Copying a suspended parent's memory straight into its clones' domains: both mapped into this
 * process through libxenforeignmemory, one batch of guest frames at a time, each parent page read
 * once and written to every clone. No save file, no stream.
 */
import { SnowflockError } from "../../errors.ts";
import { PROT_READ, PROT_WRITE } from "../../sys/constants.ts";
import { isZeroPage } from "../../guest-memory/zero-page.ts";
import { XC_PAGE_SIZE } from "./abi.ts";
import { type ForeignMemory, frameRun, withMapped } from "./foreign-memory.ts";

/** Frames per mapping: big enough to amortize the hypercall, small enough to stay cheap. */
export const COPY_BATCH = 1024;

export interface PageCopyResult {
  /** The parent's populated pages, each now in every clone. */
  pages: number;
  /** Of those, pages that were zero in the parent (written only where a shell's page was not). */
  zeroPages: number;
  batches: number;
}

/**
 * Copies every populated frame of `parent` to the same frame of each clone. Frames are found by
 * mapping: the RAM at the bottom of the physmap, scanned up until a batch holds no page, and the
 * special pages (XenStore, console) just below `maximumGpfn`, scanned down likewise.
 */
export function copyPages(
  memory: ForeignMemory,
  parent: number,
  clones: number[],
  maximumGpfn: number,
  progress?: (pages: number) => void,
): PageCopyResult {
  let pages = 0;
  let zeroPages = 0;
  let batches = 0;
  const copyBatch = (first: number): number => {
    const count = Math.min(COPY_BATCH, maximumGpfn + 1 - first);
    if (count <= 0) return 0;
    const frames = frameRun(first, count);
    const copied = withMapped(memory, parent, PROT_READ, frames, (from, sourceErrors) => {
      const present = [...sourceErrors.keys()].filter((i) => sourceErrors[i] === 0);
      if (present.length === 0) return 0;
      const zero = present.map((i) => isZeroPage(from, i));
      for (const clone of clones) {
        withMapped(memory, clone, PROT_READ | PROT_WRITE, frames, (to, targetErrors) => {
          present.forEach((i, k) => {
            if (targetErrors[i] !== 0) throw layoutMismatch(parent, clone, first + i, targetErrors[i]!);
            const at = i * XC_PAGE_SIZE;
            // A shell's fresh pages are zero (Xen scrubs them), but the domain builder wrote some.
            if (!zero[k]) to.set(from.subarray(at, at + XC_PAGE_SIZE), at);
            else if (!isZeroPage(to, i)) to.fill(0, at, at + XC_PAGE_SIZE);
          });
        });
      }
      zeroPages += zero.filter(Boolean).length;
      return present.length;
    });
    if (copied === 0) return 0;
    batches++;
    pages += copied;
    progress?.(pages);
    return copied;
  };
  let top = 0;
  for (; top <= maximumGpfn && copyBatch(top) > 0; top += COPY_BATCH);
  // The special pages sit at the top; stop at the first empty batch below them or at the RAM.
  for (let first = Math.max(top + COPY_BATCH, maximumGpfn + 1 - COPY_BATCH); first >= top + COPY_BATCH; first -= COPY_BATCH) {
    if (copyBatch(first) === 0) break;
  }
  return { pages, zeroPages, batches };
}

function layoutMismatch(parent: number, clone: number, frame: number, error: number): SnowflockError {
  return new SnowflockError(
    "VM_STATE",
    `clone domain ${clone} has no page at frame 0x${frame.toString(16)} where its parent ${parent} has one (error ${error})`,
    "the parent's memory layout changed since it was built (ballooning?); fork it again at its configured memory",
  );
}
