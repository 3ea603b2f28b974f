// Loader and typed wrapper for the mcdist fragment-reassembly WebAssembly
// kernel (source: wasm/reassembly.ts, built by `bun wasm/build.ts`).
//
// The .wasm is imported as a file so that `bun build --compile` embeds it in
// the executable; from source it is read from wasm/build/.
//
// The module is compiled once, lazily, on first use (synchronously); every
// WasmReassembly gets an instance of its own (its own linear memory, freed
// when the WasmReassembly is garbage-collected), so `new WasmReassembly(...)`
// works without any setup.
//
// WasmReassembly has the public surface of Reassembly (src/mcdist/reassembly.ts)
// and gives the same objects and counters for every frame that decodeFrame()
// can produce. Differences, all for frames decodeFrame() never returns:
//   * a send of more than MAX_FRAGMENTS (64) fragments is counted as
//     inconsistent (the reference would start a partial for it);
//   * object numbers are taken modulo 2^64 and sequence numbers modulo 2^32
//     (the reference keys on their decimal text).
// And for options: maxPartial and maxObjectBytes must be integers (checked).
//
// The kernel allocates only in init(), so its memory never grows afterwards
// and the views kept here stay valid (they are re-created if it ever did).

import wasmPath from "../../wasm/build/reassembly.wasm" with { type: "file" };
import { instantiateKernel, kernelModule } from "./kernel-loader.ts";
import type { Frame } from "../mcdist/frame.ts";
import type { ReassemblyCounters, ReassemblyOptions } from "../mcdist/reassembly.ts";

/** Status codes of the kernel's add(); a status >= 0 is a completed slot. */
export const ReassemblyStatus = {
  PENDING: -1,
  DUPLICATE: -2,
  INCONSISTENT: -3,
  OVERSIZED: -4,
  /** A single-fragment object: complete as it is (the caller's payload). */
  COMPLETE_INPUT: -5,
} as const;

/** Largest maxPartial accepted. */
export const MAX_SLOTS = 1 << 20;
/** Largest maxObjectBytes accepted (64 fragments of at most 65535 bytes fit). */
export const MAX_OBJECT_BYTES = 1 << 24;

/** Raw exports of wasm/reassembly.ts. Pointers and counts are u32 values; the object number is an i64. */
export interface ReassemblyKernel {
  readonly memory: WebAssembly.Memory;
  init(slots: number, maxObjectBytes: number): number;
  clear(): void;
  inputPtr(): number;
  countersPtr(): number;
  pending(): number;
  add(object: bigint, sequence: number, fragment: number, fragments: number, length: number): number;
  objectPtr(slot: number): number;
  objectLength(slot: number): number;
  release(slot: number): void;
}

const KERNEL_FUNCTIONS = ["init", "clear", "inputPtr", "countersPtr", "pending", "add", "objectPtr", "objectLength", "release"] as const;

/** Order of the kernel's u64 counters at countersPtr(). */
const COUNTER_NAMES = [
  "completed",
  "duplicates",
  "inconsistent",
  "oversized",
  "evicted",
] as const satisfies readonly (keyof ReassemblyCounters)[];

/** A new, uninitialised kernel instance (call init() before anything else). */
/** Compiles the kernel ahead of its first use (a ready VMM's: pool/). */
export function prepareReassemblyKernel(): void {
  kernelModule("reassembly", wasmPath);
}

export function instantiateReassemblyKernel(): ReassemblyKernel {
  return instantiateKernel<ReassemblyKernel>("reassembly", kernelModule("reassembly", wasmPath), KERNEL_FUNCTIONS);
}

/** Kernels made and initialised ahead (prepareReassembly), each for the options it was made with. */
const spares: Array<{ kernel: ReassemblyKernel; slots: number; maxObjectBytes: number }> = [];

/** Instantiates and initialises a kernel for `options` now: the next WasmReassembly made with them in this thread takes it. */
export function prepareReassembly(options: ReassemblyOptions): void {
  const slots = checkInteger("maxPartial", options.maxPartial, MAX_SLOTS);
  const maxObjectBytes = checkInteger("maxObjectBytes", options.maxObjectBytes, MAX_OBJECT_BYTES);
  spares.push({ kernel: initialisedKernel(slots, maxObjectBytes), slots, maxObjectBytes });
}

function initialisedKernel(slots: number, maxObjectBytes: number): ReassemblyKernel {
  const k = instantiateReassemblyKernel();
  if (k.init(slots, maxObjectBytes) !== 1) {
    throw new RangeError(`reassembly: ${slots} partial objects of ${maxObjectBytes} bytes need too much memory`);
  }
  return k;
}

function takeSpare(slots: number, maxObjectBytes: number): ReassemblyKernel | undefined {
  const at = spares.findIndex((spare) => spare.slots === slots && spare.maxObjectBytes === maxObjectBytes);
  return at < 0 ? undefined : spares.splice(at, 1)[0]!.kernel;
}

function checkInteger(name: string, value: number, max: number): number {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new RangeError(`reassembly: ${name} must be an integer in [0, ${max}], got ${value}`);
  }
  return value;
}

/**
 * Fragment reassembly for mcdist objects in WebAssembly: a drop-in for
 * Reassembly (src/mcdist/reassembly.ts), with the same options, results and
 * counters. `add` returns a view, valid until the next add() or clear().
 */
export class WasmReassembly {
  /** Live view of the kernel's counters (reads and writes go to the kernel). */
  readonly counters: ReassemblyCounters;
  readonly #kernel: ReassemblyKernel;
  readonly #maxObjectBytes: number;
  readonly #input: number;
  readonly #countersAt: number;
  #bytes: Uint8Array;
  #words: BigUint64Array;

  constructor(options: ReassemblyOptions) {
    const slots = checkInteger("maxPartial", options.maxPartial, MAX_SLOTS);
    this.#maxObjectBytes = checkInteger("maxObjectBytes", options.maxObjectBytes, MAX_OBJECT_BYTES);
    const k = takeSpare(slots, this.#maxObjectBytes) ?? initialisedKernel(slots, this.#maxObjectBytes);
    this.#kernel = k;
    this.#input = k.inputPtr() >>> 0;
    this.#countersAt = k.countersPtr() >>> 0;
    this.#bytes = new Uint8Array(k.memory.buffer);
    this.#words = new BigUint64Array(k.memory.buffer, this.#countersAt, COUNTER_NAMES.length);
    const counters = {} as ReassemblyCounters;
    COUNTER_NAMES.forEach((name, i) => {
      Object.defineProperty(counters, name, {
        enumerable: true,
        get: () => Number(this.#counterWords()[i]),
        set: (value: number) => {
          this.#counterWords()[i] = BigInt(value);
        },
      });
    });
    // Show values, not accessors, in console.log / Bun.inspect.
    Object.defineProperty(counters, Symbol.for("nodejs.util.inspect.custom"), { value: () => ({ ...counters }) });
    this.counters = counters;
  }

  /** Objects in progress. */
  get pending(): number {
    return this.#kernel.pending();
  }

  /**
   * Adds one frame; returns the whole object's bytes when this frame completed it: a view (of the
   * kernel's memory, or of the frame), valid until the next add() or clear(). Copy what you keep.
   */
  add(frame: Frame): Uint8Array | undefined {
    const payload = frame.payload;
    const length = payload.byteLength;
    // The kernel reads no input for single-fragment objects or payloads that
    // are oversized on their own.
    if (frame.fragments !== 1 && length <= this.#maxObjectBytes) this.#heap().set(payload, this.#input);
    const k = this.#kernel;
    const status = k.add(frame.object, frame.sequence, frame.fragment, frame.fragments, length);
    if (status >= 0) {
      const at = k.objectPtr(status) >>> 0;
      return this.#heap().subarray(at, at + (k.objectLength(status) >>> 0)); // the next add() releases the slot
    }
    if (status === ReassemblyStatus.COMPLETE_INPUT) return payload;
    return undefined;
  }

  /** Forgets every object in progress (e.g. when they can no longer be wanted). */
  clear(): void {
    this.#kernel.clear();
  }

  #heap(): Uint8Array {
    if (this.#bytes.byteLength === 0) this.#refresh(); // detached: memory grew
    return this.#bytes;
  }

  #counterWords(): BigUint64Array {
    if (this.#words.byteLength === 0) this.#refresh();
    return this.#words;
  }

  #refresh(): void {
    const buf = this.#kernel.memory.buffer;
    this.#bytes = new Uint8Array(buf);
    this.#words = new BigUint64Array(buf, this.#countersAt, COUNTER_NAMES.length);
  }
}
