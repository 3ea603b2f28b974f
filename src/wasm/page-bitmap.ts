// Loader and typed wrapper for the page-bitmap WebAssembly kernel
// (source: wasm/page-bitmap.ts, built by `bun wasm/build.ts`).
//
// The .wasm is imported as a file so that `bun build --compile` embeds it in
// the executable; from source it is read from wasm/build/.
//
// The kernel is instantiated once, lazily, on first use (synchronously), so
// `new PageBitmap(n)` works without any setup.
//
// Each PageBitmap owns a block of the kernel's linear memory. Blocks are
// released by `dispose()` (or `using`), or else when the PageBitmap object is
// garbage-collected. Memory can grow on any allocation, which detaches every
// view of the old buffer, so this module never keeps a view across calls that
// allocate.

import wasmPath from "../../wasm/build/page-bitmap.wasm" with { type: "file" };
import { instantiateKernel, kernelModule } from "./kernel-loader.ts";

/** Largest supported page count (indices are returned as i32, -1 = none). */
export const MAX_PAGES = 0x7fff_ffff;

/** Raw exports of wasm/page-bitmap.ts. Pointers and counts are u32 values. */
export interface PageBitmapKernel {
  readonly memory: WebAssembly.Memory;
  alloc(bytes: number): number;
  allocBitmap(nbits: number): number;
  free(ptr: number): void;
  memoryBytes(): number;
  setRange(bitmap: number, start: number, count: number): void;
  clearRange(bitmap: number, start: number, count: number): void;
  testBit(bitmap: number, i: number): number;
  popcount(bitmap: number, nbits: number): number;
  nextSet(bitmap: number, nbits: number, from: number): number;
  nextClear(bitmap: number, nbits: number, from: number): number;
  andInto(dst: number, a: number, nbits: number): void;
  orInto(dst: number, a: number, nbits: number): void;
  andNotInto(dst: number, a: number, nbits: number): void;
  fromByteVector(dst: number, vec: number, npages: number): void;
}

const KERNEL_FUNCTIONS = [
  "alloc",
  "allocBitmap",
  "free",
  "memoryBytes",
  "setRange",
  "clearRange",
  "testBit",
  "popcount",
  "nextSet",
  "nextClear",
  "andInto",
  "orInto",
  "andNotInto",
  "fromByteVector",
] as const;

let kernel: PageBitmapKernel | undefined;
let heapView: Uint8Array | undefined;

/** Returns the kernel, instantiating it synchronously on first use. */
export function getKernel(): PageBitmapKernel {
  kernel ??= instantiateKernel<PageBitmapKernel>("page-bitmap", kernelModule("page-bitmap", wasmPath), KERNEL_FUNCTIONS);
  return kernel;
}

/** A byte view of the whole kernel memory, re-created after memory growth. */
function heap(k: PageBitmapKernel): Uint8Array {
  const buf = k.memory.buffer;
  if (heapView === undefined || heapView.buffer !== buf) heapView = new Uint8Array(buf);
  return heapView;
}

const registry = new FinalizationRegistry<number>((ptr) => {
  kernel?.free(ptr);
});

function checkCount(name: string, value: number, max: number): number {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new RangeError(`page-bitmap: ${name} must be an integer in [0, ${max}], got ${value}`);
  }
  return value;
}

/** Pages of a mincore() vector converted per kernel call (multiple of 64). */
const MINCORE_CHUNK = 1 << 20;

/**
 * A fixed-size bitmap with one bit per guest page (bit i = page i), stored in
 * the WebAssembly kernel's memory. Bits at positions >= `size` are always 0.
 */
export class PageBitmap {
  /** Number of bits (pages). */
  readonly size: number;
  #ptr: number;

  /** Creates an all-clear bitmap of `pages` bits. */
  constructor(pages: number) {
    this.size = checkCount("page count", pages, MAX_PAGES);
    const k = getKernel();
    this.#ptr = k.allocBitmap(pages) >>> 0;
    registry.register(this, this.#ptr, this);
  }

  /** Number of bytes in `toBytes()`: ceil(size / 8). */
  get byteLength(): number {
    return Math.ceil(this.size / 8);
  }

  /** Whether `dispose()` has been called. */
  get disposed(): boolean {
    return this.#ptr < 0;
  }

  #live(): number {
    if (this.#ptr < 0) throw new Error("page-bitmap: use of a disposed PageBitmap");
    return this.#ptr;
  }

  #range(start: number, count: number): void {
    checkCount("start", start, this.size);
    checkCount("count", count, this.size - start);
  }

  #same(other: PageBitmap): number {
    if (other.size !== this.size) {
      throw new RangeError(`page-bitmap: size mismatch (${this.size} vs ${other.size})`);
    }
    return other.#live();
  }

  /** Sets bits [start, start + count). */
  set(start: number, count = 1): this {
    this.#range(start, count);
    getKernel().setRange(this.#live(), start, count);
    return this;
  }

  /** Clears bits [start, start + count). */
  clear(start: number, count = 1): this {
    this.#range(start, count);
    getKernel().clearRange(this.#live(), start, count);
    return this;
  }

  /** Sets every bit. */
  setAll(): this {
    return this.set(0, this.size);
  }

  /** Clears every bit. */
  clearAll(): this {
    return this.clear(0, this.size);
  }

  /** Whether bit `i` is set. */
  test(i: number): boolean {
    checkCount("index", i, this.size - 1);
    return getKernel().testBit(this.#live(), i) !== 0;
  }

  /** Number of set bits. */
  popcount(): number {
    return getKernel().popcount(this.#live(), this.size) >>> 0;
  }

  /** Index of the first set bit >= `from`, or -1 if none. */
  nextSet(from = 0): number {
    checkCount("from", from, this.size);
    return getKernel().nextSet(this.#live(), this.size, from);
  }

  /** Index of the first clear bit >= `from`, or -1 if none. */
  nextClear(from = 0): number {
    checkCount("from", from, this.size);
    return getKernel().nextClear(this.#live(), this.size, from);
  }

  /** this &= other (same size), in place. */
  and(other: PageBitmap): this {
    const a = this.#same(other);
    getKernel().andInto(this.#live(), a, this.size);
    return this;
  }

  /** this |= other (same size), in place. */
  or(other: PageBitmap): this {
    const a = this.#same(other);
    getKernel().orInto(this.#live(), a, this.size);
    return this;
  }

  /** this &= ~other (same size), in place. */
  andNot(other: PageBitmap): this {
    const a = this.#same(other);
    getKernel().andNotInto(this.#live(), a, this.size);
    return this;
  }

  /** Runs of consecutive set bits, in increasing order, as [start, count]. */
  *runs(): Generator<[start: number, count: number], void, undefined> {
    let pos = 0;
    while (pos < this.size) {
      const start = this.nextSet(pos);
      if (start < 0) return;
      const endOrNone = this.nextClear(start);
      const end = endOrNone < 0 ? this.size : endOrNone;
      yield [start, end - start];
      pos = end;
    }
  }

  /** An independent copy. */
  clone(): PageBitmap {
    const copy = new PageBitmap(this.size);
    copy.or(this);
    return copy;
  }

  /** The bits as ceil(size / 8) bytes, LSB-first (bit i = byte i>>3, bit i&7). */
  toBytes(): Uint8Array {
    const ptr = this.#live();
    return heap(getKernel()).slice(ptr, ptr + this.byteLength);
  }

  /**
   * Builds a bitmap from LSB-first bytes (the `toBytes()` format). `pages`
   * defaults to bytes.length * 8; bits at positions >= pages are ignored.
   */
  static fromBytes(bytes: Uint8Array, pages: number = bytes.length * 8): PageBitmap {
    checkCount("page count", pages, Math.min(MAX_PAGES, bytes.length * 8));
    const bm = new PageBitmap(pages);
    const n = bm.byteLength;
    if (n > 0) {
      const mem = heap(getKernel()); // after the allocation above
      mem.set(bytes.subarray(0, n), bm.#ptr);
      const rest = pages & 7;
      if (rest !== 0) mem[bm.#ptr + n - 1] = (bytes[n - 1] ?? 0) & ((1 << rest) - 1);
    }
    return bm;
  }

  /**
   * Builds a bitmap from a Linux mincore() vector: one byte per page, page i
   * is set when bit 0 of vec[i] is set (the other bits are ignored).
   */
  static fromMincore(vec: Uint8Array): PageBitmap {
    const pages = vec.length;
    const bm = new PageBitmap(pages);
    if (pages === 0) return bm;
    const k = getKernel();
    const chunk = Math.min(pages, MINCORE_CHUNK);
    const scratch = k.alloc(chunk) >>> 0;
    try {
      const mem = heap(k); // after the last allocation
      for (let off = 0; off < pages; off += chunk) {
        const n = Math.min(chunk, pages - off);
        mem.set(vec.subarray(off, off + n), scratch);
        // off is a multiple of 64, so the destination is word-aligned.
        k.fromByteVector(bm.#ptr + off / 8, scratch, n);
      }
    } finally {
      k.free(scratch);
    }
    return bm;
  }

  /** Releases the kernel memory now; the bitmap is unusable afterwards. */
  dispose(): void {
    if (this.#ptr < 0) return;
    registry.unregister(this);
    getKernel().free(this.#ptr);
    this.#ptr = -1;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
