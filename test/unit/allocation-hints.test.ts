import { describe, expect, test } from "bun:test";
import { createAllocationHints, isAllocated, markAllocated } from "../../src/guest-memory/allocation-hints.ts";
import { Rng } from "../support/rng.ts";

describe("allocation-hints bitmap", () => {
  test("marks exactly the pages handed out, across word boundaries, against a plain set", () => {
    const rng = new Rng(77);
    const pages = 5000;
    const hints = createAllocationHints(pages * 4096);
    const expected = new Set<number>();
    for (let round = 0; round < 200; round++) {
      const first = rng.int(0, pages - 1);
      const count = rng.pick([1, 31, 32, 33, 64, rng.int(1, 300)]);
      markAllocated(hints, first * 4096, count);
      for (let p = first; p < Math.min(first + count, pages); p++) expected.add(p);
      for (let p = 0; p < pages; p += rng.int(1, 7)) expect(isAllocated(hints, p)).toBe(expected.has(p));
    }
  });
});
