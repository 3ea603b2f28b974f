// Typed wrapper for the descriptor codec WebAssembly kernel (source: wasm/descriptor-codec.ts):
// zero-page elision plus an LZ byte codec. The encoded form is described in the kernel's source;
// test/support/descriptor-codec-reference.ts is its plain TypeScript reference (tests only).

import wasmPath from "../../wasm/build/descriptor-codec.wasm" with { type: "file" };
import { instantiateKernel, kernelModule } from "./kernel-loader.ts";

export interface DescriptorCodecKernel {
  readonly memory: WebAssembly.Memory;
  alloc(bytes: number): number;
  free(ptr: number): void;
  encodeBound(n: number): number;
  encode(src: number, n: number, dst: number, cap: number): number;
  decode(src: number, length: number, dst: number, n: number): number;
}

const KERNEL_FUNCTIONS = ["alloc", "free", "encodeBound", "encode", "decode"] as const;

/** Why decode() refused its input, by the kernel's status code. */
export const DECODE_FAILURES: Readonly<Record<number, string>> = {
  [-1]: "the encoded stream is cut off",
  [-2]: "a match points before the start of the data",
  [-3]: "the encoded stream decodes to more bytes than announced",
  [-4]: "the encoded stream decodes to fewer bytes than announced",
  [-5]: "the encoded length disagrees with the header",
};

/** The largest raw length the codec takes (the kernel counts in u32, with room for its bound). */
export const MAX_CODEC_BYTES = 1 << 30;

export class DescriptorCodecError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

let kernel: DescriptorCodecKernel | undefined;

function getKernel(): DescriptorCodecKernel {
  kernel ??= instantiateKernel<DescriptorCodecKernel>("descriptor-codec", kernelModule("descriptor-codec", wasmPath), KERNEL_FUNCTIONS);
  return kernel;
}

/**
 * Compiles and instantiates the kernel and runs it once over a descriptor-sized buffer, so that a
 * ready VMM (pool/) decodes its clone's descriptor with the module compiled, its memory grown and
 * the wrapper's code warm.
 */
export function prepareDescriptorCodec(): void {
  const sample = new Uint8Array(256 << 10);
  for (let i = 0; i < sample.length; i += 4096 * 3) sample.fill(i & 0xff, i, i + 1024);
  decodeZeroElided(encodeZeroElided(sample), sample.byteLength);
}

function checkLength(what: string, n: number): void {
  if (!Number.isInteger(n) || n < 0 || n > MAX_CODEC_BYTES)
    throw new RangeError(`descriptor codec: ${what} must be an integer in [0, ${MAX_CODEC_BYTES}], got ${n}`);
}

/** Encodes `raw`: all-zero 4 KiB blocks elided, the rest LZ-coded. */
export function encodeZeroElided(raw: Uint8Array): Uint8Array {
  checkLength("input length", raw.byteLength);
  const k = getKernel();
  const cap = k.encodeBound(raw.byteLength) >>> 0;
  const src = k.alloc(Math.max(raw.byteLength, 1)) >>> 0;
  const dst = k.alloc(cap) >>> 0;
  try {
    new Uint8Array(k.memory.buffer).set(raw, src);
    const length = k.encode(src, raw.byteLength, dst, cap);
    if (length < 0) throw new Error(`descriptor codec: the kernel refused ${raw.byteLength} bytes for a ${cap}-byte bound`);
    return new Uint8Array(k.memory.buffer).slice(dst, dst + length); // encode may have grown memory
  } finally {
    k.free(src);
    k.free(dst);
  }
}

/** Decodes what encodeZeroElided() made of `rawLength` bytes; DescriptorCodecError on corrupt or forged input. */
export function decodeZeroElided(encoded: Uint8Array, rawLength: number): Uint8Array {
  checkLength("raw length", rawLength);
  checkLength("encoded length", encoded.byteLength);
  const k = getKernel();
  const src = k.alloc(Math.max(encoded.byteLength, 1)) >>> 0;
  const dst = k.alloc(Math.max(rawLength, 1)) >>> 0;
  try {
    new Uint8Array(k.memory.buffer).set(encoded, src);
    const status = k.decode(src, encoded.byteLength, dst, rawLength);
    if (status !== 0) throw new DescriptorCodecError(status, DECODE_FAILURES[status] ?? `decoding failed with status ${status}`);
    return new Uint8Array(k.memory.buffer).slice(dst, dst + rawLength);
  } finally {
    k.free(src);
    k.free(dst);
  }
}
