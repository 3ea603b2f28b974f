/**
 * Byte-level mutations for the fuzz engine: bit flips, byte insertion and deletion, splicing two
 * inputs, interesting integers, truncation and length-field tweaks. Each takes the case's seeded
 * Rng, so a case is a pure function of its seed.
 */
import type { Rng } from "../support/rng.ts";

/** No decoder here takes more than this from one message; mutations never grow an input beyond it. */
export const MAX_INPUT_BYTES = 1 << 20;

/** Values at the edges of 8-, 16-, 32- and 64-bit fields: where length and bound checks go wrong. */
const INTERESTING_U32 = [
  0, 1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 63, 64, 65, 127, 128, 255, 256, 4095, 4096, 4097, 32767, 32768, 65535, 65536, 0x7fffffff, 0x80000000,
  0xfffffffe, 0xffffffff, 0x10000000, 0x1000000,
];
const INTERESTING_U64 = [
  0n,
  1n,
  0x7fffffffffffffffn,
  0x8000000000000000n,
  0xffffffffffffffffn,
  0x100000000n,
  1n << 53n,
  (1n << 53n) + 1n,
  0x10000000n,
];

type Mutation = (input: Uint8Array, rng: Rng, corpus: readonly Uint8Array[]) => Uint8Array;

const at = (input: Uint8Array, rng: Rng) => (input.byteLength === 0 ? 0 : rng.int(0, input.byteLength - 1));

function join(...parts: Uint8Array[]): Uint8Array {
  return Buffer.concat(parts).subarray(0, MAX_INPUT_BYTES);
}

const flipBits: Mutation = (input, rng) => {
  const out = input.slice();
  for (let n = rng.int(1, 4); n > 0 && out.byteLength > 0; n--) out[at(out, rng)]! ^= 1 << rng.int(0, 7);
  return out;
};

const setByte: Mutation = (input, rng) => {
  const out = input.slice();
  if (out.byteLength > 0) out[at(out, rng)] = rng.pick([0, 1, 0x7f, 0x80, 0xff, rng.int(0, 255)]);
  return out;
};

const insertBytes: Mutation = (input, rng) => {
  const i = rng.int(0, input.byteLength);
  const fill = rng.bool() ? rng.bytes(rng.int(1, 16)) : new Uint8Array(rng.int(1, 4096)).fill(rng.pick([0, 0xff, rng.int(0, 255)]));
  return join(input.subarray(0, i), fill, input.subarray(i));
};

const deleteBytes: Mutation = (input, rng) => {
  const i = at(input, rng);
  return join(input.subarray(0, i), input.subarray(i + rng.int(1, rng.bool(0.8) ? 16 : 4096)));
};

const duplicateBytes: Mutation = (input, rng) => {
  const i = at(input, rng);
  const chunk = input.subarray(i, i + rng.int(1, 512));
  return join(input.subarray(0, i), chunk, input.subarray(i));
};

const splice: Mutation = (input, rng, corpus) => {
  const other = rng.pick(corpus);
  return join(input.subarray(0, at(input, rng)), other.subarray(at(other, rng)));
};

const truncate: Mutation = (input, rng) => input.slice(0, rng.bool(0.3) ? rng.int(0, Math.min(64, input.byteLength)) : at(input, rng));

/** Overwrites 1, 2, 4 or 8 bytes (either byte order) with a value at a field's edge, or near the one there. */
const interestingInteger: Mutation = (input, rng) => {
  const out = input.slice();
  const width = rng.pick([1, 2, 4, 8]);
  if (out.byteLength < width) return out;
  const offset = rng.bool(0.5) ? rng.int(0, Math.min(out.byteLength - width, 64)) : rng.int(0, out.byteLength - width);
  const v = new DataView(out.buffer, out.byteOffset, out.byteLength);
  const little = rng.bool();
  if (width === 8) v.setBigUint64(offset, rng.pick(INTERESTING_U64), little);
  else {
    const mask = width === 4 ? 0xffffffff : (1 << (8 * width)) - 1;
    const current = width === 1 ? v.getUint8(offset) : width === 2 ? v.getUint16(offset, little) : v.getUint32(offset, little);
    // A length field nudged by a little (off-by-one) or replaced by an edge value.
    const value = (rng.bool(0.4) ? current + rng.int(-8, 8) : rng.pick(INTERESTING_U32)) & mask;
    if (width === 1) v.setUint8(offset, value);
    else if (width === 2) v.setUint16(offset, value, little);
    else v.setUint32(offset, value >>> 0, little);
  }
  return out;
};

const MUTATIONS: readonly Mutation[] = [
  flipBits,
  setByte,
  insertBytes,
  deleteBytes,
  duplicateBytes,
  splice,
  truncate,
  interestingInteger,
  interestingInteger,
];

/** One to four stacked byte mutations of `input`. */
export function mutateBytes(input: Uint8Array, rng: Rng, corpus: readonly Uint8Array[]): Uint8Array {
  let out = input;
  for (let n = rng.int(1, 4); n > 0; n--) out = rng.pick(MUTATIONS)(out, rng, corpus);
  return out;
}
