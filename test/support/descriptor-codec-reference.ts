/**
 * Plain TypeScript reference of the descriptor codec kernel (wasm/descriptor-codec.ts): the same
 * format and the same greedy algorithm, byte for byte, written for clarity. Tests and bench only.
 */
const BLOCK = 4096;
const HASH_BITS = 12;
const MIN_MATCH = 4;
const MAX_OFFSET = 65535;

const blocksOf = (n: number): number => Math.ceil(n / BLOCK);
const mapBytes = (n: number): number => Math.ceil(blocksOf(n) / 8);
const blockLength = (n: number, b: number): number => Math.min(BLOCK, n - b * BLOCK);

/** Output with room for the codec's bound, written front to back. */
class Output {
  readonly bytes: Uint8Array;
  at = 0;
  constructor(capacity: number) {
    this.bytes = new Uint8Array(capacity);
  }
  push(byte: number): void {
    this.bytes[this.at++] = byte;
  }
  pushLength(extra: number): void {
    let rest = extra;
    for (; rest >= 255; rest -= 255) this.push(255);
    this.push(rest);
  }
  pushSequence(literals: Uint8Array, offset: number, matchLength: number): void {
    const matchExtra = matchLength === 0 ? 0 : matchLength - MIN_MATCH;
    this.push((Math.min(literals.length, 15) << 4) | Math.min(matchExtra, 15));
    if (literals.length >= 15) this.pushLength(literals.length - 15);
    this.bytes.set(literals, this.at);
    this.at += literals.length;
    if (matchLength === 0) return;
    this.push(offset & 0xff);
    this.push(offset >>> 8);
    if (matchExtra >= 15) this.pushLength(matchExtra - 15);
  }
}

function read32(bytes: Uint8Array, at: number): number {
  return (bytes[at]! | (bytes[at + 1]! << 8) | (bytes[at + 2]! << 16) | (bytes[at + 3]! << 24)) >>> 0;
}

function compress(src: Uint8Array, out: Output): void {
  const table = new Uint32Array(1 << HASH_BITS);
  let anchor = 0;
  let i = 0;
  while (i + MIN_MATCH <= src.length) {
    const v = read32(src, i);
    const slot = Math.imul(v, 2654435761) >>> (32 - HASH_BITS);
    const candidate = table[slot]!;
    table[slot] = i + 1;
    const from = candidate - 1;
    if (candidate !== 0 && i - from <= MAX_OFFSET && read32(src, from) === v) {
      let length = MIN_MATCH;
      while (i + length < src.length && src[from + length] === src[i + length]) length++;
      out.pushSequence(src.subarray(anchor, i), i - from, length);
      i += length;
      anchor = i;
    } else {
      i++;
    }
  }
  out.pushSequence(src.subarray(anchor), 0, 0);
}

export function referenceEncode(raw: Uint8Array): Uint8Array {
  const n = raw.length;
  const out = new Output(4 + mapBytes(n) + n + Math.floor(n / 255) + 16);
  new DataView(out.bytes.buffer).setUint32(0, n, true);
  const map = out.bytes.subarray(4, 4 + mapBytes(n));
  const stored = new Uint8Array(n);
  let storedLength = 0;
  for (let b = 0; b < blocksOf(n); b++) {
    const block = raw.subarray(b * BLOCK, b * BLOCK + blockLength(n, b));
    if (block.every((byte) => byte === 0)) {
      map[b >> 3]! |= 1 << (b & 7);
    } else {
      stored.set(block, storedLength);
      storedLength += block.length;
    }
  }
  out.at = 4 + map.length;
  compress(stored.subarray(0, storedLength), out);
  return out.bytes.slice(0, out.at);
}

/** The decoded bytes, or the kernel's status code for refused input. */
export function referenceDecode(encoded: Uint8Array, n: number): Uint8Array | number {
  const blocks = blocksOf(n);
  if (encoded.length < 4 + mapBytes(n)) return -1;
  if (read32(encoded, 0) !== n) return -5;
  const zero = (b: number): boolean => (encoded[4 + (b >> 3)]! & (1 << (b & 7))) !== 0;
  let want = 0;
  for (let b = 0; b < blocks; b++) if (!zero(b)) want += blockLength(n, b);
  const stored = new Uint8Array(want);
  let written = 0;
  let at = 4 + mapBytes(n);
  const readLength = (): number | undefined => {
    let value = 0;
    for (;;) {
      if (at >= encoded.length) return undefined;
      const byte = encoded[at++]!;
      value += byte;
      if (byte !== 255) return value;
      if (value > 0x7fff0000) return undefined;
    }
  };
  for (;;) {
    if (at >= encoded.length) return -1;
    const token = encoded[at++]!;
    let literals = token >> 4;
    if (literals === 15) {
      const extra = readLength();
      if (extra === undefined) return -1;
      literals += extra;
    }
    if (literals > encoded.length - at) return -1;
    if (written + literals > want) return -3;
    stored.set(encoded.subarray(at, at + literals), written);
    written += literals;
    at += literals;
    if (at === encoded.length) {
      if (written !== want) return -4;
      break;
    }
    if (encoded.length - at < 2) return -1;
    const offset = encoded[at]! | (encoded[at + 1]! << 8);
    at += 2;
    if (offset === 0 || offset > written) return -2;
    let length = (token & 15) + MIN_MATCH;
    if ((token & 15) === 15) {
      const extra = readLength();
      if (extra === undefined) return -1;
      length += extra;
    }
    if (written + length > want) return -3;
    for (let k = 0; k < length; k++, written++) stored[written] = stored[written - offset]!;
  }
  const out = new Uint8Array(n);
  let from = 0;
  for (let b = 0; b < blocks; b++) {
    if (zero(b)) continue;
    const length = blockLength(n, b);
    out.set(stored.subarray(from, from + length), b * BLOCK);
    from += length;
  }
  return out;
}
