/** isZeroPage: the one zero-page test the KVM descriptor and Xen's eager copy share. */
import { expect, test } from "bun:test";
import { PAGE_SIZE } from "../../src/guest-memory/layout.ts";
import { isZeroPage } from "../../src/guest-memory/zero-page.ts";

test("a page is zero only if every byte is, also in a view that starts inside its buffer", () => {
  const backing = new Uint8Array(5 * PAGE_SIZE);
  const pages = backing.subarray(PAGE_SIZE); // byteOffset != 0
  pages[2 * PAGE_SIZE - 1] = 1; // the last byte of page 1
  pages[2 * PAGE_SIZE] = 0x80; // the first byte of page 2
  expect([0, 1, 2, 3].map((p) => isZeroPage(pages, p))).toEqual([true, false, false, true]);
  backing[0] = 7; // before the view: not part of any of its pages
  expect(isZeroPage(pages, 0)).toBe(true);
});
