// Property tests: the WebAssembly page-bitmap kernel (through its wrapper in
// src/wasm/page-bitmap.ts) against a plain TypeScript reference
// implementation that lives only in this file.
//
// Needs the kernel to be built first: `bun wasm/build.ts`.
// Set PAGE_BITMAP_SEED=<n> to rerun with another PRNG seed.

import { describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { RefBitmap } from "../support/page-bitmap-reference.ts";
import { Rng as BaseRng } from "../support/rng.ts";

const WASM_FILE = join(import.meta.dir, "..", "..", "wasm", "build", "page-bitmap.wasm");
if (!existsSync(WASM_FILE)) {
  throw new Error(`${WASM_FILE} is missing: build the WebAssembly kernels first with \`bun wasm/build.ts\``);
}
const { PageBitmap, getKernel, MAX_PAGES } = await import("../../src/wasm/page-bitmap.ts");
type PageBitmap = InstanceType<typeof PageBitmap>;

// ---------------------------------------------------------------------------
// The seeded PRNG, with the shapes input bitmaps are made of.

class Rng extends BaseRng {
  /** A size, biased towards word boundaries and small values. */
  size(max: number): number {
    const boundary = [0, 1, 2, 7, 8, 9, 63, 64, 65, 127, 128, 129, 191, 192, 193, 4095, 4096, 4097];
    switch (this.int(0, 3)) {
      case 0:
        return boundary[this.int(0, boundary.length - 1)] ?? 0;
      case 1:
        return this.int(0, 300);
      case 2:
        return 64 * this.int(1, 300) + this.int(-1, 1); // next to a word boundary
      default:
        return this.int(0, max);
    }
  }
  /** A range [start, start + count) inside [0, size]. */
  range(size: number): [number, number] {
    const kind = this.int(0, 4);
    if (kind === 0) {
      // Range ending exactly at the end of the bitmap.
      const count = this.int(0, size);
      return [size - count, count];
    }
    if (kind === 1) {
      // Short range, often crossing a word boundary.
      const start = this.int(0, size);
      return [start, this.int(0, Math.min(size - start, 70))];
    }
    const start = this.int(0, size);
    return [start, this.int(0, size - start)];
  }
  /** A mincore()-like vector: bit 0 = resident, other bits random noise. */
  mincore(n: number): Uint8Array {
    const density = this.next();
    const v = new Uint8Array(n);
    for (let i = 0; i < n; i++) v[i] = (this.int(0, 255) & 0xfe) | (this.bool(density) ? 1 : 0);
    return v;
  }
}

const BASE_SEED = Number(process.env.PAGE_BITMAP_SEED ?? 0x5eed_f10c) >>> 0;

/** A random bitmap and its reference twin. */
function randomPair(rng: Rng, size: number): [PageBitmap, RefBitmap] {
  switch (rng.int(0, 2)) {
    case 0: {
      const vec = rng.mincore(size);
      return [PageBitmap.fromMincore(vec), RefBitmap.fromMincore(vec)];
    }
    case 1: {
      const bytes = rng.bytes(Math.ceil(size / 8) + rng.int(0, 3));
      return [PageBitmap.fromBytes(bytes, size), RefBitmap.fromBytes(bytes, size)];
    }
    default: {
      const bm = new PageBitmap(size);
      const ref = new RefBitmap(size);
      for (let k = rng.int(0, 6); k > 0; k--) {
        const [s, c] = rng.range(size);
        if (rng.bool(0.6)) {
          bm.set(s, c);
          ref.set(s, c);
        } else {
          bm.clear(s, c);
          ref.clear(s, c);
        }
      }
      return [bm, ref];
    }
  }
}

/** Checks every read-only operation of `bm` against `ref`. */
function expectSame(rng: Rng, bm: PageBitmap, ref: RefBitmap, what: string): void {
  const size = ref.size;
  expect(bm.size, what).toBe(size);
  expect(bm.toBytes(), `${what}: bytes`).toEqual(ref.toBytes());
  expect(bm.popcount(), `${what}: popcount`).toBe(ref.popcount());
  const froms = [0, size, Math.max(0, size - 1)];
  for (let k = 0; k < 6; k++) froms.push(rng.int(0, size));
  for (const from of froms) {
    expect(bm.nextSet(from), `${what}: nextSet(${from})`).toBe(ref.nextSet(from));
    expect(bm.nextClear(from), `${what}: nextClear(${from})`).toBe(ref.nextClear(from));
  }
  if (size > 0) {
    for (let k = 0; k < 8; k++) {
      const i = k === 0 ? size - 1 : rng.int(0, size - 1);
      expect(bm.test(i), `${what}: test(${i})`).toBe(ref.test(i));
    }
  }
}

// ---------------------------------------------------------------------------

describe("PageBitmap vs reference (random)", () => {
  const SEEDS = 8;
  for (let s = 0; s < SEEDS; s++) {
    const seed = (BASE_SEED + s * 0x9e37_79b9) >>> 0;

    test(`set/clear/test/popcount/nextSet/nextClear, seed ${seed}`, () => {
      const rng = new Rng(seed);
      for (let trial = 0; trial < 60; trial++) {
        const size = rng.size(20_000);
        const bm = new PageBitmap(size);
        const ref = new RefBitmap(size);
        for (let step = 0; step < 12; step++) {
          const [start, count] = rng.range(size);
          const op = rng.bool(0.55) ? "set" : "clear";
          bm[op](start, count);
          ref[op](start, count);
          expectSame(rng, bm, ref, `size ${size} step ${step} ${op}(${start}, ${count})`);
        }
        bm.dispose();
      }
    });

    test(`and/or/andNot, seed ${seed}`, () => {
      const rng = new Rng(seed ^ 0xa5a5_a5a5);
      for (let trial = 0; trial < 80; trial++) {
        const size = rng.size(20_000);
        const [a, refA] = randomPair(rng, size);
        const [b, refB] = randomPair(rng, size);
        for (const op of ["and", "or", "andNot"] as const) {
          const x = a.clone();
          const refX = RefBitmap.fromBytes(refA.toBytes(), size);
          x[op](b);
          refX[op](refB);
          expectSame(rng, x, refX, `size ${size} ${op}`);
          // The operand is unchanged.
          expect(b.toBytes()).toEqual(refB.toBytes());
          x.dispose();
        }
        // Chained, in place.
        a.and(b).or(b).andNot(b);
        refA.and(refB);
        refA.or(refB);
        refA.andNot(refB);
        expectSame(rng, a, refA, `size ${size} chained`);
        a.dispose();
        b.dispose();
      }
    });

    test(`fromMincore/fromBytes/toBytes/runs, seed ${seed}`, () => {
      const rng = new Rng(seed ^ 0x0f0f_0f0f);
      for (let trial = 0; trial < 60; trial++) {
        const size = rng.size(20_000);
        const vec = rng.mincore(size);
        const bm = PageBitmap.fromMincore(vec);
        const ref = RefBitmap.fromMincore(vec);
        expectSame(rng, bm, ref, `fromMincore size ${size}`);
        expect([...bm.runs()]).toEqual(ref.runs());

        const back = PageBitmap.fromBytes(bm.toBytes(), size);
        expectSame(rng, back, ref, `fromBytes(toBytes) size ${size}`);

        // fromBytes with garbage beyond `size` in the last byte and beyond.
        const bytes = rng.bytes(Math.ceil(size / 8) + rng.int(0, 9));
        const fb = PageBitmap.fromBytes(bytes, size);
        const refFb = RefBitmap.fromBytes(bytes, size);
        expectSame(rng, fb, refFb, `fromBytes size ${size}`);
        expect([...fb.runs()]).toEqual(refFb.runs());
        bm.dispose();
        back.dispose();
        fb.dispose();
      }
    });
  }
});

describe("PageBitmap edge cases", () => {
  test("empty bitmap", () => {
    const bm = new PageBitmap(0);
    expect(bm.size).toBe(0);
    expect(bm.byteLength).toBe(0);
    expect(bm.popcount()).toBe(0);
    expect(bm.nextSet(0)).toBe(-1);
    expect(bm.nextClear(0)).toBe(-1);
    expect(bm.toBytes()).toEqual(new Uint8Array(0));
    expect([...bm.runs()]).toEqual([]);
    bm.set(0, 0).clear(0, 0).setAll().clearAll();
    expect(bm.popcount()).toBe(0);
    expect(() => bm.test(0)).toThrow(RangeError);
    expect(() => bm.set(0, 1)).toThrow(RangeError);
    const other = new PageBitmap(0);
    bm.and(other).or(other).andNot(other);
    expect(PageBitmap.fromMincore(new Uint8Array(0)).size).toBe(0);
    expect(PageBitmap.fromBytes(new Uint8Array(0)).size).toBe(0);
  });

  test("one bit", () => {
    const bm = new PageBitmap(1);
    expect(bm.test(0)).toBe(false);
    expect(bm.nextSet(0)).toBe(-1);
    expect(bm.nextClear(0)).toBe(0);
    bm.set(0);
    expect(bm.test(0)).toBe(true);
    expect(bm.popcount()).toBe(1);
    expect(bm.nextSet(0)).toBe(0);
    expect(bm.nextClear(0)).toBe(-1);
    expect(bm.nextSet(1)).toBe(-1);
    expect(bm.toBytes()).toEqual(new Uint8Array([1]));
    expect([...bm.runs()]).toEqual([[0, 1]]);
    bm.clear(0);
    expect(bm.toBytes()).toEqual(new Uint8Array([0]));
    expect(PageBitmap.fromMincore(new Uint8Array([0xff])).toBytes()).toEqual(new Uint8Array([1]));
    expect(PageBitmap.fromMincore(new Uint8Array([0xfe])).toBytes()).toEqual(new Uint8Array([0]));
    expect(() => bm.test(1)).toThrow(RangeError);
  });

  test("ranges at the end, around word boundaries", () => {
    for (const size of [1, 2, 63, 64, 65, 127, 128, 129, 1000, 1023, 1024, 1025]) {
      for (const count of [0, 1, 2, 63, 64, 65, 129]) {
        if (count > size) continue;
        const bm = new PageBitmap(size);
        const ref = new RefBitmap(size);
        bm.set(size - count, count);
        ref.set(size - count, count);
        expect(bm.toBytes()).toEqual(ref.toBytes());
        expect(bm.popcount()).toBe(count);
        expect(bm.nextSet(0)).toBe(count === 0 ? -1 : size - count);
        expect(bm.nextClear(size - count)).toBe(-1);
        bm.setAll();
        bm.clear(size - count, count);
        ref.set(0, size);
        ref.clear(size - count, count);
        expect(bm.toBytes()).toEqual(ref.toBytes());
        expect(bm.nextClear(0)).toBe(count === 0 ? -1 : size - count);
        expect(bm.nextSet(size - count)).toBe(-1);
        bm.dispose();
      }
    }
  });

  test("setAll leaves the bits past the end clear", () => {
    for (const size of [1, 5, 8, 9, 63, 64, 65, 70]) {
      const bm = new PageBitmap(size).setAll();
      expect(bm.popcount()).toBe(size);
      const bytes = bm.toBytes();
      expect(bytes.length).toBe(Math.ceil(size / 8));
      expect(bytes[bytes.length - 1]).toBe(size % 8 === 0 ? 0xff : (1 << (size % 8)) - 1);
      expect(bm.nextClear(0)).toBe(-1);
      // OR with a full bitmap must not leak into the tail either.
      const full = new PageBitmap(size).setAll();
      expect(new PageBitmap(size).or(full).toBytes()).toEqual(bytes);
    }
  });

  test("argument checking", () => {
    const bm = new PageBitmap(100);
    expect(() => bm.set(-1, 1)).toThrow(RangeError);
    expect(() => bm.set(0, 101)).toThrow(RangeError);
    expect(() => bm.set(99, 2)).toThrow(RangeError);
    expect(() => bm.set(1.5, 1)).toThrow(RangeError);
    expect(() => bm.clear(101, 0)).toThrow(RangeError);
    expect(() => bm.test(100)).toThrow(RangeError);
    expect(() => bm.test(-1)).toThrow(RangeError);
    expect(() => bm.nextSet(101)).toThrow(RangeError);
    expect(() => bm.and(new PageBitmap(99))).toThrow(RangeError);
    expect(() => new PageBitmap(-1)).toThrow(RangeError);
    expect(() => new PageBitmap(MAX_PAGES + 1)).toThrow(RangeError);
    expect(() => new PageBitmap(Number.NaN)).toThrow(RangeError);
    expect(() => PageBitmap.fromBytes(new Uint8Array(2), 17)).toThrow(RangeError);
    bm.set(100, 0); // empty range at the very end is fine
    expect(bm.nextSet(100)).toBe(-1);
  });

  test("dispose", () => {
    const bm = new PageBitmap(10);
    bm.dispose();
    expect(bm.disposed).toBe(true);
    expect(() => bm.popcount()).toThrow(/disposed/);
    expect(() => new PageBitmap(10).or(bm)).toThrow(/disposed/);
    bm.dispose(); // idempotent
    {
      using scoped = new PageBitmap(10);
      scoped.set(3);
      expect(scoped.popcount()).toBe(1);
    }
  });

  test("memory growth keeps existing bitmaps intact", () => {
    const rng = new Rng(BASE_SEED ^ 0x1234_5678);
    const kernel = getKernel();
    const small = rng.mincore(1000);
    const bm = PageBitmap.fromMincore(small);
    const ref = RefBitmap.fromMincore(small);
    const before = kernel.memoryBytes() >>> 0;
    // 3M + 17 pages: grows memory and takes several fromByteVector chunks.
    const pages = 3 * (1 << 20) + 17;
    const vec = rng.mincore(pages);
    const big = PageBitmap.fromMincore(vec);
    expect(kernel.memoryBytes() >>> 0).toBeGreaterThan(before);
    expectSame(rng, bm, ref, "small bitmap after growth");
    let expected = 0;
    for (const b of vec) expected += b & 1;
    expect(big.popcount()).toBe(expected);
    const bytes = big.toBytes();
    for (let k = 0; k < 2000; k++) {
      const i = k < 64 ? pages - 1 - k : rng.int(0, pages - 1);
      expect(((bytes[i >> 3] ?? 0) >> (i & 7)) & 1).toBe((vec[i] ?? 0) & 1);
    }
    big.dispose();
  });
});

describe("raw kernel contract", () => {
  test("bits past nbits: ignored by readers, preserved by andInto/orInto/andNotInto", () => {
    const k = getKernel();
    const nbits = 70; // two words, 6 valid bits in the second
    const dst = k.allocBitmap(128) >>> 0;
    const a = k.allocBitmap(128) >>> 0;
    const view = (): DataView => new DataView(k.memory.buffer);
    const garbage = 0xdead_beef_cafe_f00dn;
    view().setBigUint64(dst + 8, garbage, true);
    view().setBigUint64(a + 8, ~garbage & 0xffff_ffff_ffff_ffffn, true);
    view().setBigUint64(a, 0xffff_ffff_ffff_ffffn, true);
    const valid = (1n << 6n) - 1n;
    const tailOf = (ptr: number): bigint => view().getBigUint64(ptr + 8, true);

    // Readers only see the first nbits bits: the low 6 bits of the garbage
    // word are 0b001101 (bits 0, 2, 3) and of its complement 0b110010.
    expect(k.popcount(dst, nbits)).toBe(3);
    expect(k.nextSet(dst, nbits, 4)).toBe(64);
    expect(k.nextSet(dst, nbits, 68)).toBe(-1);
    expect(k.nextClear(dst, nbits, 68)).toBe(68);
    expect(k.nextSet(a, nbits, 64)).toBe(65);
    expect(k.nextClear(a, nbits, 68)).toBe(-1);
    expect(k.popcount(a, nbits)).toBe(64 + 3);

    for (const op of ["andInto", "orInto", "andNotInto"] as const) {
      view().setBigUint64(dst + 8, garbage, true);
      k[op](dst, a, nbits);
      const got = tailOf(dst);
      expect(got & ~valid).toBe(garbage & ~valid);
      const av = tailOf(a);
      const want = op === "andInto" ? garbage & av : op === "orInto" ? garbage | av : garbage & ~av;
      expect(got & valid).toBe(want & valid);
    }
    k.free(dst);
    k.free(a);
  });
});
