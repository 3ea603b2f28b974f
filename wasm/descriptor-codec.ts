// Descriptor codec kernel (AssemblyScript -> WebAssembly): zero-page elision
// plus a fast LZ byte codec, for VM descriptor payloads (register state,
// page bitmaps, the few pages a descriptor carries).
//
// The plain TypeScript reference of the same format and algorithm is
// test/support/descriptor-codec-reference.ts; for the same input both give
// the same bytes.
//
// Encoded form (little-endian):
//   u32   raw length n
//   zero map: ceil(blocks / 8) bytes, blocks = ceil(n / 4096); bit b (LSB
//         first) set = block b is all zero and is not stored
//   LZ stream of the stored blocks, concatenated in order. Sequences of
//         token (high nibble: literal count, low nibble: match length - 4;
//         15 = more follows as bytes of 255 ending with one < 255),
//         literals, u16 match offset (1..65535), extra match length bytes.
//         The last sequence has literals only and ends the stream.
//
// The encoder is greedy: a 4096-entry hash table of 4-byte sequences finds a
// match candidate at each position. The decoder checks every length, offset
// and bound: corrupt or forged input gives a negative status, never a read or
// write outside the buffers it was given.
//
// Use from JavaScript: `alloc` the buffers; `encode(src, n, dst, cap)` with
// cap >= encodeBound(n) returns the encoded length; `decode(src, len, dst, n)`
// returns 0 or a negative status (below). `alloc` and `encode` may grow
// memory, which detaches JS views of the old buffer.

const BLOCK: u32 = 4096;
const HASH_BITS: u32 = 12;
const MIN_MATCH: u32 = 4;
const MAX_OFFSET: u32 = 65535;

export const STATUS_OK: i32 = 0;
/** The input ends inside a header, token, length, literal run or offset. */
export const STATUS_TRUNCATED: i32 = -1;
/** A match offset is 0 or reaches before the start of the output. */
export const STATUS_BAD_OFFSET: i32 = -2;
/** The stream decodes to more bytes than the stored blocks hold. */
export const STATUS_OVERRUN: i32 = -3;
/** The stream ends before the stored blocks are filled. */
export const STATUS_SHORT: i32 = -4;
/** The header's raw length is not the one the caller expects. */
export const STATUS_LENGTH_MISMATCH: i32 = -5;

let table: usize = 0;

export function alloc(bytes: u32): usize {
  return heap.alloc(<usize>bytes);
}

export function free(ptr: usize): void {
  heap.free(ptr);
}

// @ts-ignore: decorator
@inline function blocksOf(n: u32): u32 {
  return (n + BLOCK - 1) / BLOCK;
}

// @ts-ignore: decorator
@inline function mapBytes(n: u32): u32 {
  return (blocksOf(n) + 7) >>> 3;
}

/** Largest encoded size of an n-byte input. */
export function encodeBound(n: u32): u32 {
  return 4 + mapBytes(n) + n + n / 255 + 16;
}

function blockIsZero(p: usize, len: u32): bool {
  let i: u32 = 0;
  for (; i + 8 <= len; i += 8) if (load<u64>(p + i) != 0) return false;
  for (; i < len; i++) if (load<u8>(p + i) != 0) return false;
  return true;
}

/** Writes a length continuation (value >= 15 already in the token): bytes of 255, then the rest. */
// @ts-ignore: decorator
@inline function putLength(out: usize, extra: u32): usize {
  let rest = extra;
  while (rest >= 255) {
    store<u8>(out++, 255);
    rest -= 255;
  }
  store<u8>(out++, <u8>rest);
  return out;
}

function putSequence(out: usize, literals: usize, literalCount: u32, offset: u32, matchLength: u32): usize {
  const literalNibble = literalCount < 15 ? literalCount : 15;
  const matchExtra = matchLength == 0 ? 0 : matchLength - MIN_MATCH;
  const matchNibble = matchExtra < 15 ? matchExtra : 15;
  store<u8>(out++, <u8>((literalNibble << 4) | matchNibble));
  if (literalCount >= 15) out = putLength(out, literalCount - 15);
  memory.copy(out, literals, literalCount);
  out += literalCount;
  if (matchLength == 0) return out;
  store<u16>(out, <u16>offset);
  out += 2;
  if (matchExtra >= 15) out = putLength(out, matchExtra - 15);
  return out;
}

/** The LZ stream of src[0..n) at out; returns the end of what was written. */
function compress(src: usize, n: u32, out: usize): usize {
  if (table == 0) table = heap.alloc(<usize>(4 << HASH_BITS));
  memory.fill(table, 0, <usize>(4 << HASH_BITS));
  let anchor: u32 = 0;
  let i: u32 = 0;
  while (i + MIN_MATCH <= n) {
    const v = load<u32>(src + i);
    const slot = table + (<usize>((v * 2654435761) >>> (32 - HASH_BITS)) << 2);
    const candidate = load<u32>(slot);
    store<u32>(slot, i + 1);
    if (candidate != 0 && i - (candidate - 1) <= MAX_OFFSET && load<u32>(src + candidate - 1) == v) {
      const from = candidate - 1;
      let length = MIN_MATCH;
      while (i + length < n && load<u8>(src + from + length) == load<u8>(src + i + length)) length++;
      out = putSequence(out, src + anchor, i - anchor, i - from, length);
      i += length;
      anchor = i;
    } else {
      i++;
    }
  }
  return putSequence(out, src + anchor, n - anchor, 0, 0);
}

export function encode(src: usize, n: u32, dst: usize, cap: u32): i32 {
  if (cap < encodeBound(n)) return -1;
  const blocks = blocksOf(n);
  const map = dst + 4;
  const mapLength = mapBytes(n);
  store<u32>(dst, n);
  memory.fill(map, 0, mapLength);
  const stored = heap.alloc(<usize>(n > 0 ? n : 1));
  let storedLength: u32 = 0;
  for (let b: u32 = 0; b < blocks; b++) {
    const at = b * BLOCK;
    const length = n - at < BLOCK ? n - at : BLOCK;
    if (blockIsZero(src + at, length)) {
      const byte = map + (b >>> 3);
      store<u8>(byte, <u32>load<u8>(byte) | (<u32>1 << (b & 7)));
    } else {
      memory.copy(stored + storedLength, src + at, length);
      storedLength += length;
    }
  }
  const end = compress(stored, storedLength, map + mapLength);
  heap.free(stored);
  return <i32>(end - dst);
}

/** The value of the last length continuation read. */
let lengthRead: u32 = 0;

/** Reads a length continuation into lengthRead; returns the new input position, or 0 if the input ends first. */
function readLength(at: usize, end: usize): usize {
  let value: u32 = 0;
  while (true) {
    if (at >= end) return 0;
    const byte = <u32>load<u8>(at++);
    value += byte;
    if (byte != 255) break;
    if (value > 0x7fff_0000) return 0;
  }
  lengthRead = value;
  return at;
}

/** Decodes the LZ stream [at, end) into exactly `want` bytes at out. */
function decompress(at: usize, end: usize, out: usize, want: u32): i32 {
  let written: u32 = 0;
  while (true) {
    if (at >= end) return STATUS_TRUNCATED;
    const token = <u32>load<u8>(at++);
    let literals = token >>> 4;
    if (literals == 15) {
      at = readLength(at, end);
      if (at == 0) return STATUS_TRUNCATED;
      literals += lengthRead;
    }
    if (<u64>literals > <u64>(end - at)) return STATUS_TRUNCATED;
    if (<u64>written + literals > <u64>want) return STATUS_OVERRUN;
    memory.copy(out + written, at, literals);
    at += literals;
    written += literals;
    if (at == end) return written == want ? STATUS_OK : STATUS_SHORT;
    if (end - at < 2) return STATUS_TRUNCATED;
    const offset = <u32>load<u16>(at);
    at += 2;
    if (offset == 0 || offset > written) return STATUS_BAD_OFFSET;
    let length = (token & 15) + MIN_MATCH;
    if ((token & 15) == 15) {
      at = readLength(at, end);
      if (at == 0) return STATUS_TRUNCATED;
      length += lengthRead;
    }
    if (<u64>written + length > <u64>want) return STATUS_OVERRUN;
    // Byte by byte: a match may overlap the bytes it is producing (runs).
    const from = out + written - offset;
    const to = out + written;
    for (let k: u32 = 0; k < length; k++) store<u8>(to + k, load<u8>(from + k));
    written += length;
  }
  return STATUS_OK;
}

export function decode(src: usize, len: u32, dst: usize, n: u32): i32 {
  const mapLength = mapBytes(n);
  if (len < 4 + mapLength) return STATUS_TRUNCATED;
  if (load<u32>(src) != n) return STATUS_LENGTH_MISMATCH;
  const map = src + 4;
  const blocks = blocksOf(n);
  let storedLength: u32 = 0;
  for (let b: u32 = 0; b < blocks; b++) {
    if ((load<u8>(map + (b >>> 3)) & (1 << (b & 7))) == 0) {
      const at = b * BLOCK;
      storedLength += n - at < BLOCK ? n - at : BLOCK;
    }
  }
  const status = decompress(map + mapLength, src + len, dst, storedLength);
  if (status != STATUS_OK) return status;
  // Spread the stored blocks to their places, last first: a block's place is
  // never before where it was decoded, so nothing is overwritten before it moves.
  let from = storedLength;
  for (let b = <i32>blocks - 1; b >= 0; b--) {
    const at = <u32>b * BLOCK;
    const length = n - at < BLOCK ? n - at : BLOCK;
    if ((load<u8>(map + (<u32>b >>> 3)) & (1 << (<u32>b & 7))) != 0) {
      memory.fill(dst + at, 0, length);
    } else {
      from -= length;
      memory.copy(dst + at, dst + from, length);
    }
  }
  return STATUS_OK;
}
