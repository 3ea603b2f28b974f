import { describe, expect, test } from "bun:test";
import { HIGH_RAM_BASE, LOW_RAM_LIMIT, memoryLayout, translate } from "../../src/guest-memory/layout.ts";

describe("guest memory layout", () => {
  test("small memory is one region from 0", () => {
    expect(memoryLayout(256 << 20).regions).toEqual([{ guestAddress: 0, size: 256 << 20, offset: 0 }]);
  });

  test("memory above 3 GiB continues at 4 GiB, leaving the device hole", () => {
    const layout = memoryLayout(4 * 2 ** 30);
    expect(layout.regions).toEqual([
      { guestAddress: 0, size: LOW_RAM_LIMIT, offset: 0 },
      { guestAddress: HIGH_RAM_BASE, size: 2 ** 30, offset: LOW_RAM_LIMIT },
    ]);
    expect(translate(layout, BigInt(HIGH_RAM_BASE) + 8n, 8n)).toBe(LOW_RAM_LIMIT + 8);
    expect(translate(layout, 0xfee00000n, 4n)).toBeUndefined();
    // A range may not run from one region into the hole or the next region.
    expect(translate(layout, BigInt(LOW_RAM_LIMIT - 4), 8n)).toBeUndefined();
  });

  test("sizes that are not whole pages are refused", () => {
    expect(() => memoryLayout(0)).toThrow();
    expect(() => memoryLayout(4097)).toThrow();
  });

  test("ranges are checked without 64-bit wraparound", () => {
    const layout = memoryLayout(1 << 20);
    expect(translate(layout, 0n, BigInt(1 << 20))).toBe(0);
    expect(translate(layout, 1n, BigInt(1 << 20))).toBeUndefined();
    expect(translate(layout, (1n << 64n) - 1n, 2n)).toBeUndefined();
    expect(translate(layout, -1n, 1n)).toBeUndefined();
    expect(translate(layout, 0n, -1n)).toBeUndefined();
  });
});
