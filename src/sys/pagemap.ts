/** /proc/self/pagemap: which pages of a mapping this process has (present or swapped), one read for a whole range. */
import { closeSync, openSync, readSync } from "node:fs";

const ENTRY_BYTES = 8;
/** Bits 63 (present) and 62 (swapped) of an entry, in its high 32-bit word. */
const HELD_BITS = 0xc0000000;

/** One byte per page of [address, address + length), 1 where the page is present or swapped (mincore's vector format). */
export function heldPages(address: number, length: number, pageSize = 4096): Uint8Array {
  const pages = Math.ceil(length / pageSize);
  const entries = new Uint32Array(pages * 2);
  const bytes = new Uint8Array(entries.buffer);
  const fd = openSync("/proc/self/pagemap", "r");
  try {
    for (let done = 0; done < bytes.byteLength; ) {
      const got = readSync(fd, bytes, done, bytes.byteLength - done, (address / pageSize) * ENTRY_BYTES + done);
      if (got <= 0) break;
      done += got;
    }
  } finally {
    closeSync(fd);
  }
  const vector = new Uint8Array(pages);
  for (let page = 0; page < pages; page++) if ((entries[page * 2 + 1]! & HELD_BITS) !== 0) vector[page] = 1;
  return vector;
}
