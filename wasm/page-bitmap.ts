// Page-bitmap kernel (AssemblyScript -> WebAssembly).
//
// A bitmap holds one bit per guest page. It lives in this module's linear
// memory as an array of u64 words; bit i (page i) is bit (i & 63) of word
// (i >>> 6). Because WebAssembly is little-endian this is also bit (i & 7) of
// byte (i >>> 3), so the raw bytes of a bitmap are the usual LSB-first
// bitmap and can be copied in/out of JavaScript as-is.
//
// Conventions:
//   * Every bitmap/vector argument is a byte offset into linear memory,
//     obtained from `alloc` (16-byte aligned). A bitmap of `nbits` bits must
//     own at least `words(nbits) * 8` bytes.
//   * Bit indices and counts are u32. Indices returned by nextSet/nextClear
//     are i32 with -1 meaning "none", so callers must keep nbits <= 2^31 - 1.
//   * Range functions (setRange/clearRange/testBit) do no bounds checking;
//     the caller keeps ranges inside the bitmap.
//   * Functions taking `nbits` ignore any bits at positions >= nbits in the
//     last word, and the in-place combinators leave those bits of `dst`
//     untouched.
//   * `alloc` / `free` are the TLSF allocator of the AssemblyScript "minimal"
//     runtime (build with `--runtime minimal`); `alloc` grows memory as
//     needed, which detaches any JS view of the old memory buffer.

// @ts-ignore: decorator
@inline const ALL: u64 = 0xFFFF_FFFF_FFFF_FFFF;

/** Number of u64 words needed for `nbits` bits. */
// @ts-ignore: decorator
@inline function wordsFor(nbits: u32): usize {
  return (<usize>nbits + 63) >>> 6;
}

/** Mask selecting the valid bits of the last word of an `nbits`-bit bitmap. */
// @ts-ignore: decorator
@inline function tailMask(nbits: u32): u64 {
  const r = nbits & 63;
  return r == 0 ? ALL : (ALL >>> (64 - <u64>r));
}

// @ts-ignore: decorator
@inline function wordAt(base: usize, w: usize): usize {
  return base + (w << 3);
}

// ---------------------------------------------------------------------------
// Memory management

/** Allocates `bytes` bytes (16-byte aligned, contents undefined). */
export function alloc(bytes: u32): usize {
  return heap.alloc(<usize>bytes);
}

/** Allocates a zero-filled bitmap of `nbits` bits (at least one word). */
export function allocBitmap(nbits: u32): usize {
  let bytes = wordsFor(nbits) << 3;
  if (bytes == 0) bytes = 8;
  const p = heap.alloc(bytes);
  memory.fill(p, 0, bytes);
  return p;
}

/** Releases a block returned by `alloc` / `allocBitmap`. */
export function free(ptr: usize): void {
  heap.free(ptr);
}

/** Size of linear memory in bytes (changes when memory grows). */
export function memoryBytes(): usize {
  return (<usize>memory.size()) << 16;
}

// ---------------------------------------------------------------------------
// Ranges and single bits

/** Sets bits [start, start + count). */
export function setRange(bitmap: usize, start: u32, count: u32): void {
  if (count == 0) return;
  const end: u64 = <u64>start + <u64>count; // exclusive, may be 2^32
  const last: u64 = end - 1;
  const ws = <usize>(start >>> 6);
  const we = <usize>(last >>> 6);
  const head: u64 = ALL << (<u64>start & 63);
  const tail: u64 = ALL >>> (63 - (last & 63));
  if (ws == we) {
    const p = wordAt(bitmap, ws);
    store<u64>(p, load<u64>(p) | (head & tail));
    return;
  }
  let p = wordAt(bitmap, ws);
  store<u64>(p, load<u64>(p) | head);
  const mid = ws + 1;
  if (we > mid) memory.fill(wordAt(bitmap, mid), 0xFF, (we - mid) << 3);
  p = wordAt(bitmap, we);
  store<u64>(p, load<u64>(p) | tail);
}

/** Clears bits [start, start + count). */
export function clearRange(bitmap: usize, start: u32, count: u32): void {
  if (count == 0) return;
  const end: u64 = <u64>start + <u64>count;
  const last: u64 = end - 1;
  const ws = <usize>(start >>> 6);
  const we = <usize>(last >>> 6);
  const head: u64 = ALL << (<u64>start & 63);
  const tail: u64 = ALL >>> (63 - (last & 63));
  if (ws == we) {
    const p = wordAt(bitmap, ws);
    store<u64>(p, load<u64>(p) & ~(head & tail));
    return;
  }
  let p = wordAt(bitmap, ws);
  store<u64>(p, load<u64>(p) & ~head);
  const mid = ws + 1;
  if (we > mid) memory.fill(wordAt(bitmap, mid), 0, (we - mid) << 3);
  p = wordAt(bitmap, we);
  store<u64>(p, load<u64>(p) & ~tail);
}

/** Returns 1 if bit `i` is set, else 0. */
export function testBit(bitmap: usize, i: u32): i32 {
  const w = load<u64>(wordAt(bitmap, <usize>(i >>> 6)));
  return <i32>((w >>> (<u64>i & 63)) & 1);
}

// ---------------------------------------------------------------------------
// Counting and searching

/** Number of set bits among the first `nbits` bits. */
export function popcount(bitmap: usize, nbits: u32): u32 {
  const n = wordsFor(nbits);
  if (n == 0) return 0;
  let total: u64 = 0;
  const full = n - 1;
  for (let w: usize = 0; w < full; w++) {
    total += popcnt<u64>(load<u64>(wordAt(bitmap, w)));
  }
  total += popcnt<u64>(load<u64>(wordAt(bitmap, full)) & tailMask(nbits));
  return <u32>total;
}

/**
 * Index of the first set bit at position >= `from` and < `nbits`, or -1 if
 * there is none (also -1 when from >= nbits).
 */
export function nextSet(bitmap: usize, nbits: u32, from: u32): i32 {
  if (from >= nbits) return -1;
  const lastWord = <usize>((nbits - 1) >>> 6);
  let w = <usize>(from >>> 6);
  let word = load<u64>(wordAt(bitmap, w)) & (ALL << (<u64>from & 63));
  while (true) {
    if (word != 0) {
      const idx = (<u64>w << 6) + ctz<u64>(word);
      return idx < <u64>nbits ? <i32>idx : -1;
    }
    if (w == lastWord) return -1;
    w++;
    word = load<u64>(wordAt(bitmap, w));
  }
}

/**
 * Index of the first clear bit at position >= `from` and < `nbits`, or -1 if
 * there is none (also -1 when from >= nbits).
 */
export function nextClear(bitmap: usize, nbits: u32, from: u32): i32 {
  if (from >= nbits) return -1;
  const lastWord = <usize>((nbits - 1) >>> 6);
  let w = <usize>(from >>> 6);
  let word = ~load<u64>(wordAt(bitmap, w)) & (ALL << (<u64>from & 63));
  while (true) {
    if (word != 0) {
      const idx = (<u64>w << 6) + ctz<u64>(word);
      return idx < <u64>nbits ? <i32>idx : -1;
    }
    if (w == lastWord) return -1;
    w++;
    word = ~load<u64>(wordAt(bitmap, w));
  }
}

// ---------------------------------------------------------------------------
// In-place set algebra: dst = dst OP a over the first nbits bits. Bits of dst
// at positions >= nbits (in the last word) are preserved.

/** dst &= a */
export function andInto(dst: usize, a: usize, nbits: u32): void {
  const n = wordsFor(nbits);
  if (n == 0) return;
  const full = n - 1;
  for (let w: usize = 0; w < full; w++) {
    const p = wordAt(dst, w);
    store<u64>(p, load<u64>(p) & load<u64>(wordAt(a, w)));
  }
  const m = tailMask(nbits);
  const p = wordAt(dst, full);
  const d = load<u64>(p);
  store<u64>(p, (d & ~m) | (d & load<u64>(wordAt(a, full)) & m));
}

/** dst |= a */
export function orInto(dst: usize, a: usize, nbits: u32): void {
  const n = wordsFor(nbits);
  if (n == 0) return;
  const full = n - 1;
  for (let w: usize = 0; w < full; w++) {
    const p = wordAt(dst, w);
    store<u64>(p, load<u64>(p) | load<u64>(wordAt(a, w)));
  }
  const m = tailMask(nbits);
  const p = wordAt(dst, full);
  store<u64>(p, load<u64>(p) | (load<u64>(wordAt(a, full)) & m));
}

/** dst &= ~a */
export function andNotInto(dst: usize, a: usize, nbits: u32): void {
  const n = wordsFor(nbits);
  if (n == 0) return;
  const full = n - 1;
  for (let w: usize = 0; w < full; w++) {
    const p = wordAt(dst, w);
    store<u64>(p, load<u64>(p) & ~load<u64>(wordAt(a, w)));
  }
  const m = tailMask(nbits);
  const p = wordAt(dst, full);
  store<u64>(p, load<u64>(p) & ~(load<u64>(wordAt(a, full)) & m));
}

// ---------------------------------------------------------------------------
// mincore(2) vectors

// Gathers bit 0 of each of the 8 bytes of `x` into one byte (byte k -> bit k).
// After masking, byte k's bit sits at position 8k; multiplying by the magic
// constant moves it to position 56 + k with no colliding partial products.
// @ts-ignore: decorator
@inline function gatherLowBits(x: u64): u64 {
  return ((x & 0x0101_0101_0101_0101) * 0x0102_0408_1020_4080) >>> 56;
}

/**
 * Converts a mincore() residency vector (one byte per page, bit 0 = page
 * resident, other bits ignored) of `npages` bytes at `vec` into the bitmap at
 * `dst` (which must hold `npages` bits). Writes whole words: bits >= npages in
 * the last word are cleared.
 */
export function fromByteVector(dst: usize, vec: usize, npages: u32): void {
  const fullWords = <usize>(npages >>> 6);
  let src = vec;
  for (let w: usize = 0; w < fullWords; w++) {
    let word: u64 = 0;
    // 64 bytes -> 64 bits, eight bytes per step.
    for (let k: u64 = 0; k < 64; k += 8) {
      word |= gatherLowBits(load<u64>(src)) << k;
      src += 8;
    }
    store<u64>(wordAt(dst, w), word);
  }
  const rest = npages & 63;
  if (rest != 0) {
    let word: u64 = 0;
    for (let k: u32 = 0; k < rest; k++) {
      word |= (<u64>load<u8>(src + <usize>k) & 1) << <u64>k;
    }
    store<u64>(wordAt(dst, fullWords), word);
  }
}
