/**
 * Filling clone shells on this host from a parent on another host (eager): every frame the
 * parent's image marks as holding data is fetched once from its memory server (a PageSource:
 * TCP, or mcdist) and written into the same frame of each shell; a frame the parent had zero is
 * zeroed where the domain builder left something. Over mcdist, pages another host asked for reach
 * this one too: kept (up to MAX_KEPT_PAGES) and not asked for again. Runs on a fork helper thread
 * (it blocks).
 */
import { SnowflockError } from "../../errors.ts";
import { isZeroPage } from "../../guest-memory/zero-page.ts";
import type { PageSource } from "../../memory/page-source.ts";
import { MAX_PAGES_PER_REQUEST } from "../../memory/page-protocol.ts";
import { fetchEach } from "../../memory/page-requests.ts";
import { PROT_READ, PROT_WRITE } from "../../sys/constants.ts";
import { XC_PAGE_SIZE } from "./abi.ts";
import { type ForeignMemory, frameRun, withMapped } from "./foreign-memory.ts";
import { COPY_BATCH } from "./page-copy.ts";
import { hasPage } from "../../guest-memory/page-bits.ts";

export interface PageFetchResult {
  /** Frames fetched (each written to every shell), and frames the parent had zero. */
  pagesFetched: number;
  pagesZero: number;
  /** Of the frames fetched, those that came without this host asking (another host's request, by multicast). */
  pagesUnasked: number;
  /** Time spent waiting for the memory server's answers (the rest went to writing the shells). */
  waitedMs: number;
}

/** Pages other hosts asked for, kept until their batch comes; 128 MiB at most (later ones are asked for again). */
export const MAX_KEPT_PAGES = 32768;

/** Pages that arrived unasked (PageSourceOptions.onExtraPage), by frame. */
export class UnaskedPages {
  private readonly pages = new Map<number, Uint8Array>();
  keep = (page: number, data: Uint8Array): void => {
    if (this.pages.size < MAX_KEPT_PAGES) this.pages.set(page, data.slice()); // data is the source's buffer
  };
  take(page: number): Uint8Array | undefined {
    const data = this.pages.get(page);
    this.pages.delete(page);
    return data;
  }
}

/** Frames [0, pages) of every shell in `shells` from `source`, as `nonZeroPages` says; `unasked`: what came by others' requests. */
export function fetchIntoShells(
  memory: Pick<ForeignMemory, "map" | "unmap">,
  source: Pick<PageSource, "fetch" | "fetchEach">,
  shells: number[],
  pages: number,
  nonZeroPages: Uint8Array,
  unasked?: UnaskedPages,
  progress?: (pagesDone: number, waitedMs: number) => void,
): PageFetchResult {
  if (nonZeroPages.byteLength < Math.ceil(pages / 8))
    throw new SnowflockError("INTERNAL", `a page bitmap of ${nonZeroPages.byteLength} bytes for ${pages} frames`);
  let pagesFetched = 0;
  let pagesZero = 0;
  let pagesUnasked = 0;
  let waitedMs = 0;
  for (let first = 0; first < pages; first += COPY_BATCH) {
    const count = Math.min(COPY_BATCH, pages - first);
    const wanted: number[] = [];
    for (let frame = first; frame < first + count; frame++) if (hasPage(nonZeroPages, frame)) wanted.push(frame);
    // The batch's pages, fetched before any shell is mapped (a fetch may wait on the network).
    const data = new Uint8Array(wanted.length * XC_PAGE_SIZE);
    // Where each request's pages go in `data`, in the order the requests were made.
    const asked: number[][] = [];
    function* requests(): Generator<number[]> {
      for (let i = 0; i < wanted.length; ) {
        // What came meanwhile by another host's request is not asked for.
        const ask: number[] = [];
        for (; i < wanted.length && ask.length < MAX_PAGES_PER_REQUEST; i++) {
          const page = unasked?.take(wanted[i]!);
          if (page) data.set(page, i * XC_PAGE_SIZE), pagesUnasked++;
          else ask.push(i);
        }
        if (ask.length > 0) {
          asked.push(ask);
          yield ask.map((k) => wanted[k]!);
        }
      }
    }
    const waitFrom = performance.now();
    fetchEach(source, requests(), (_, contents) => {
      const ask = asked.shift()!;
      contents.forEach((page, k) => data.set(page, ask[k]! * XC_PAGE_SIZE));
    });
    waitedMs += performance.now() - waitFrom;
    const frames = frameRun(first, count);
    for (const shell of shells) {
      withMapped(memory, shell, PROT_READ | PROT_WRITE, frames, (to, errors) => {
        let next = 0;
        for (let i = 0; i < count; i++) {
          if (errors[i] !== 0)
            throw new SnowflockError(
              "VM_STATE",
              `clone domain ${shell} has no page at frame 0x${(first + i).toString(16)} (error ${errors[i]})`,
              "the parent's configuration gives more memory than this host built its shell with",
            );
          const at = i * XC_PAGE_SIZE;
          if (wanted[next] === first + i) {
            to.set(data.subarray(next * XC_PAGE_SIZE, (next + 1) * XC_PAGE_SIZE), at);
            next++;
          } else if (!isZeroPage(to, i)) to.fill(0, at, at + XC_PAGE_SIZE);
        }
      });
    }
    pagesFetched += wanted.length;
    pagesZero += count - wanted.length;
    progress?.(pagesFetched, waitedMs);
  }
  return { pagesFetched, pagesZero, pagesUnasked, waitedMs };
}
