/**
 * The descriptor's layout: the fixed-size parts of its sections, and the stated maxima of what a
 * descriptor may describe. Every size the decoder accepts is derived from these, so the largest
 * payload is known before anything is decoded.
 */
import { MAX_STATE_BYTES } from "../backend/persist.ts";
import { PAGE_SIZE } from "../guest-memory/layout.ts";

/** The most guest memory a descriptor may describe. */
export const MAX_MEMORY_BYTES = 256 * 1024 ** 3;
/** The most the metadata JSON may take (a name, a command line, a few regions). */
export const MAX_META_BYTES = 64 * 1024;
/** Pages sent along: page tables and the pages under each vCPU's RIP and RSP (a few dozen in practice). */
export const MAX_INCLUDED_PAGES = 4096;

const SECTION_HEADER = 8;
/** A page sent along: its u64 number in the index, and the page. */
export const INCLUDED_PAGE_BYTES = 8 + PAGE_SIZE;

/** The largest payload the layout allows for this much memory: every section at its largest. */
export function maxPayloadBytes(memorySize: number): number {
  const pages = Math.ceil(memorySize / PAGE_SIZE);
  const bitmap = SECTION_HEADER + Math.ceil(pages / 8);
  const included = SECTION_HEADER + 4 + Math.min(pages, MAX_INCLUDED_PAGES) * INCLUDED_PAGE_BYTES;
  return SECTION_HEADER + MAX_META_BYTES + MAX_STATE_BYTES + 2 * bitmap + included;
}

/** The largest descriptor payload of all (about 33 MiB); a header announcing more is refused. */
export const MAX_PAYLOAD_BYTES = maxPayloadBytes(MAX_MEMORY_BYTES);
