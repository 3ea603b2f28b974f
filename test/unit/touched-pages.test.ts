/**
 * GuestMemory's touched and non-zero pages, which a paused parent's descriptor is made of: a
 * memfd's from its data ranges, a private mapping's from its image plus the pages it holds of its
 * own, anonymous memory's from mincore. Real memfds and mappings; no VM.
 */
import { afterEach, expect, test } from "bun:test";
import { GuestMemory } from "../../src/guest-memory/guest-memory.ts";
import { memoryLayout, PAGE_SIZE } from "../../src/guest-memory/layout.ts";
import { close } from "../../src/sys/files.ts";
import type { PageBitmap } from "../../src/wasm/page-bitmap.ts";

const SIZE = 64 << 20;
const open: Array<{ close(): void }> = [];
afterEach(() => {
  for (const item of open.splice(0)) item.close();
});

function pages(bitmap: PageBitmap): number[] {
  const out: number[] = [];
  for (let page = bitmap.nextSet(0); page >= 0; page = bitmap.nextSet(page + 1)) out.push(page);
  bitmap.dispose();
  return out;
}

function write(memory: GuestMemory, page: number, value: number): void {
  memory.bytes[page * PAGE_SIZE + 123] = value;
}

test("a memfd's touched pages are those written, however far apart", () => {
  const memory = GuestMemory.create(SIZE);
  open.push(memory);
  for (const page of [0, 1, 2, 777, SIZE / PAGE_SIZE - 1]) write(memory, page, 1);
  write(memory, 900, 0); // touched, but zero
  expect(pages(memory.touchedPages())).toEqual([0, 1, 2, 777, 900, SIZE / PAGE_SIZE - 1]);
  expect(pages(memory.nonZeroPages())).toEqual([0, 1, 2, 777, SIZE / PAGE_SIZE - 1]);
});

test("after a freeze: the image's pages and those written since, and a second image holds exactly the non-zero ones", () => {
  const memory = GuestMemory.create(SIZE);
  open.push(memory);
  for (const page of [3, 4, 500]) write(memory, page, 1);
  const first = memory.freeze();
  open.push({ close: () => close(first) });
  write(memory, 600, 2); // a page the image does not have
  write(memory, 4, 0); // now zero again, in this mapping only
  expect(pages(memory.touchedPages())).toEqual([3, 4, 500, 600]);
  expect(pages(memory.nonZeroPages())).toEqual([3, 500, 600]);
  const second = memory.freeze();
  open.push({ close: () => close(second) });
  const clone = GuestMemory.openImage(`/proc/self/fd/${second}`, memory.layout);
  open.push(clone);
  expect(pages(clone.nonZeroPages())).toEqual([3, 500, 600]);
  expect([3, 500, 600].map((page) => clone.bytes[page * PAGE_SIZE + 123])).toEqual([1, 1, 2]);
});

test("a freeze given the non-zero pages writes those into the new image", () => {
  const memory = GuestMemory.create(SIZE);
  open.push(memory);
  write(memory, 10, 1);
  const first = memory.freeze();
  open.push({ close: () => close(first) });
  write(memory, 20, 5);
  const nonZero = memory.nonZeroPages();
  const second = memory.freeze(nonZero.toBytes());
  nonZero.dispose();
  open.push({ close: () => close(second) });
  const clone = GuestMemory.openImage(`/proc/self/fd/${second}`, memory.layout);
  open.push(clone);
  expect(pages(clone.nonZeroPages())).toEqual([10, 20]);
});

test("anonymous memory (filled on demand) counts the pages it holds", () => {
  const memory = GuestMemory.createEmpty(memoryLayout(SIZE));
  open.push(memory);
  expect(pages(memory.touchedPages())).toEqual([]);
  write(memory, 0, 9);
  expect(pages(memory.touchedPages())).toEqual([0]);
});
