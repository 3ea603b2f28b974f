/** Telling a zero page from one with data: a memcmp against a page of zeros (Buffer.compare). */
import { PAGE_SIZE } from "./layout.ts";

const ZERO_PAGE = Buffer.alloc(PAGE_SIZE);

/** Whether page `page` of `bytes` (page-sized, from its start) holds only zeros. */
export function isZeroPage(bytes: Uint8Array, page: number): boolean {
  const at = bytes.byteOffset + page * PAGE_SIZE;
  return Buffer.from(bytes.buffer, at, PAGE_SIZE).equals(ZERO_PAGE);
}
