/**
 * WASM kernels against their plain TypeScript references, in-process (no VM, no network).
 * Prints operations per second for each (median of several runs) and the ratio.
 *
 *   bun bench/wasm.ts [--runs 9]
 *
 * Needs the kernels built first: `bun wasm/build.ts`.
 *
 * Sections, one per kernel:
 *   reassembly  mcdist fragment reassembly, src/wasm/reassembly.ts (WasmReassembly) vs
 *               src/mcdist/reassembly.ts (Reassembly): 4112-byte page objects at MTU 1500
 *               (3 fragments each), as the client configures it (512 partial objects).
 *   page bitmap the page-bitmap kernel's operations (ranges, and/or/and-not, population count,
 *               run scanning) on a 1 GiB guest's bitmaps vs test/support/page-bitmap-reference.ts;
 *               and the fetch plan built on them (src/heuristics) vs its byte-by-byte reference.
 *   codec       the descriptor codec (zero-page elision + LZ) vs
 *               test/support/descriptor-codec-reference.ts, on a descriptor-shaped payload;
 *               zlib's deflate (what descriptors used before) for size and speed beside it.
 */
import { type Frame, fragment, FrameType } from "../src/mcdist/frame.ts";
import { Reassembly } from "../src/mcdist/reassembly.ts";
import { WasmReassembly } from "../src/wasm/reassembly.ts";
import { machineNote, median } from "../src/bench/machine.ts";
import { planFetches } from "../src/heuristics/heuristics.ts";
import { referenceFetchPlan } from "../test/support/fetch-plan-reference.ts";
import { PageBitmap } from "../src/wasm/page-bitmap.ts";
import { RefBitmap } from "../test/support/page-bitmap-reference.ts";
import { decodeZeroElided, encodeZeroElided } from "../src/wasm/descriptor-codec.ts";
import { referenceDecode, referenceEncode } from "../test/support/descriptor-codec-reference.ts";
import { deflateSync, inflateSync } from "node:zlib";

const PAGE_OBJECT = 4112;
const MAX_PARTIAL = 512;
const MTU = 1500;
const PAGES = 8192;

interface Reassembler {
  add(frame: Frame): Uint8Array | undefined;
}

function argRuns(): number {
  const i = process.argv.indexOf("--runs");
  const n = i >= 0 ? Number(process.argv[i + 1]) : 9;
  if (!Number.isInteger(n) || n < 1) throw new Error("--runs wants a positive integer");
  return n;
}

/** A small deterministic PRNG (xorshift32), so every run sees the same frames. */
function xorshift(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
}

function pageFrames(): Frame[][] {
  const data = new Uint8Array(PAGE_OBJECT * 16);
  for (let i = 0; i < data.length; i++) data[i] = (i * 131 + 7) & 0xff;
  return Array.from({ length: PAGES }, (_, page) => {
    const at = (page % 16) * PAGE_OBJECT;
    return fragment(FrameType.PAGE, 1, 1, BigInt(page), data.subarray(at, at + PAGE_OBJECT), MTU);
  });
}

/** Page after page, fragments in order: the common case on a quiet LAN. */
function inOrder(pages: Frame[][]): Frame[] {
  return pages.flat();
}

/** Windows of 64 pages with their fragments shuffled together, 10% of frames twice. */
function interleaved(pages: Frame[][]): Frame[] {
  const rand = xorshift(0x5eed);
  const out: Frame[] = [];
  for (let w = 0; w < pages.length; w += 64) {
    const window = pages.slice(w, w + 64).flat();
    for (const f of window.slice()) if (rand() < 0.1) window.push(f);
    for (let i = window.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [window[i], window[j]] = [window[j]!, window[i]!];
    }
    out.push(...window);
  }
  return out;
}

/** Feeds every frame to a fresh reassembler; returns frames per second. */
function timeOnce(make: () => Reassembler, frames: Frame[]): number {
  const r = make();
  let completed = 0;
  const started = performance.now();
  for (const f of frames) if (r.add(f) !== undefined) completed++;
  const seconds = (performance.now() - started) / 1000;
  if (completed < PAGES) throw new Error(`only ${completed} of ${PAGES} objects completed`);
  return frames.length / seconds;
}

function fmt(opsPerSecond: number): string {
  return `${(opsPerSecond / 1e6).toFixed(2)} M frames/s`;
}

function reassemblySection(runs: number): void {
  const options = { maxPartial: MAX_PARTIAL, maxObjectBytes: PAGE_OBJECT };
  const impls: [string, () => Reassembler][] = [
    ["TS  ", () => new Reassembly(options)],
    ["WASM", () => new WasmReassembly(options)],
  ];
  const pages = pageFrames();
  console.log(
    `reassembly: ${PAGES} objects of ${PAGE_OBJECT} B at MTU ${MTU} (${pages[0]!.length} fragments each), ` +
      `maxPartial ${MAX_PARTIAL}, median of ${runs} runs`,
  );
  for (const [name, frames] of [
    ["in order", inOrder(pages)],
    ["interleaved (64-page windows shuffled, 10% duplicates)", interleaved(pages)],
  ] as const) {
    // Warm up both (JIT, wasm tiers) before timing; then alternate runs.
    for (const [, make] of impls) for (let i = 0; i < 3; i++) timeOnce(make, frames);
    const samples = impls.map(() => [] as number[]);
    for (let run = 0; run < runs; run++) impls.forEach(([, make], i) => samples[i]!.push(timeOnce(make, frames)));
    const medians = samples.map(median);
    console.log(`  ${name}, ${frames.length} frames:`);
    impls.forEach(([impl], i) => console.log(`    ${impl} ${fmt(medians[i]!)}`));
    console.log(`    WASM / TS = ${(medians[1]! / medians[0]!).toFixed(2)}x`);
  }
}

/** Runs each implementation `runs` times (after a warm-up), alternating; returns median runs per second. */
function runsPerSecond(impls: Array<[string, () => unknown]>, runs: number): number[] {
  for (const [, run] of impls) for (let i = 0; i < 3; i++) run();
  const samples = impls.map(() => [] as number[]);
  for (let r = 0; r < runs; r++) {
    impls.forEach(([, run], i) => {
      const started = performance.now();
      run();
      samples[i]!.push(1000 / (performance.now() - started));
    });
  }
  return samples.map(median);
}

function printRatio(impls: Array<[string, () => unknown]>, medians: number[], unit: (perSecond: number) => string): void {
  impls.forEach(([impl], i) => console.log(`    ${impl} ${unit(medians[i]!)}`));
  console.log(`    WASM / TS = ${(medians[1]! / medians[0]!).toFixed(2)}x`);
}

const GUEST_PAGES = (1 << 30) / 4096;

/** Bitmap bytes with runs of set and clear bits, like a guest's touched or free pages. */
function runsBitmap(seed: number): Uint8Array {
  const next = xorshift(seed);
  const bytes = new Uint8Array(GUEST_PAGES / 8);
  for (let at = 0; at < bytes.length; ) {
    const length = 1 + Math.floor(next() * 512);
    if (next() < 0.5) bytes.fill(0xff, at, at + length);
    at += length + Math.floor(next() * 512);
  }
  return bytes;
}

interface BitmapOps {
  set(start: number, count: number): unknown;
  clear(start: number, count: number): unknown;
  popcount(): number;
  nextSet(from: number): number;
  nextClear(from: number): number;
}

/** One planning round's bitmap work: ranges, combinations, a count and a walk over every run. */
function bitmapRound<B extends BitmapOps>(a: B, b: B, combine: (x: B, y: B) => void, ranges: Array<[number, number]>): number {
  for (const [start, count] of ranges) a.set(start, count);
  for (const [start, count] of ranges) b.clear(start, count >> 1);
  combine(a, b);
  let runs = 0;
  for (let at = a.nextSet(0); at >= 0; at = a.nextSet(at)) {
    runs++;
    const end = a.nextClear(at);
    if (end < 0) break;
    at = end;
  }
  return a.popcount() + runs;
}

function pageBitmapSection(runs: number): void {
  const first = runsBitmap(0xb17);
  const second = runsBitmap(0xf00d);
  const next = xorshift(0x7a9e);
  const ranges = Array.from({ length: 64 }, (): [number, number] => {
    const start = Math.floor(next() * GUEST_PAGES);
    return [start, Math.floor(next() * Math.min(4096, GUEST_PAGES - start))];
  });
  const impls: Array<[string, () => unknown]> = [
    [
      "TS  ",
      () =>
        bitmapRound(
          RefBitmap.fromBytes(first, GUEST_PAGES),
          RefBitmap.fromBytes(second, GUEST_PAGES),
          (x, y) => {
            x.or(y);
            x.andNot(y);
            x.and(y);
          },
          ranges,
        ),
    ],
    [
      "WASM",
      () => {
        using a = PageBitmap.fromBytes(first, GUEST_PAGES);
        using b = PageBitmap.fromBytes(second, GUEST_PAGES);
        return bitmapRound(
          a,
          b,
          (x, y) => {
            x.or(y);
            x.andNot(y);
            x.and(y);
          },
          ranges,
        );
      },
    ],
  ];
  const [ts, wasm] = impls.map(([, run]) => run());
  if (ts !== wasm) throw new Error(`page bitmap: the kernel and the reference disagree (${wasm} vs ${ts})`);
  console.log(
    `page bitmap: a 1 GiB guest's bitmaps (${GUEST_PAGES} pages): load two, 64 set and clear ranges, ` +
      `or/and-not/and, population count, walk every run; median of ${runs} runs`,
  );
  printRatio(impls, runsPerSecond(impls, runs), (perSecond) => `${perSecond.toFixed(0)} rounds/s`);

  const nonZero = Uint8Array.from({ length: GUEST_PAGES / 8 }, () => next() * 256);
  const free = Uint8Array.from({ length: GUEST_PAGES / 8 }, () => next() * 256);
  const plans: Array<[string, () => unknown]> = [
    ["TS  ", () => referenceFetchPlan(nonZero, free, [])],
    ["WASM", () => planFetches(nonZero, free, [])],
  ];
  console.log(`fetch plan: the same guest's known-zero and free-pages bitmaps, random; median of ${runs} runs`);
  printRatio(plans, runsPerSecond(plans, runs), (perSecond) => `${perSecond.toFixed(0)} plans/s`);
}

/** A payload shaped like a 1 GiB guest's descriptor: metadata, registers, two bitmaps, carried pages. */
function descriptorShapedPayload(): Uint8Array {
  const next = xorshift(0xde5c);
  const meta = new TextEncoder().encode(
    JSON.stringify({
      name: "bench",
      memory: 1 << 30,
      vcpus: 2,
      regions: Array.from({ length: 24 }, (_, i) => ({ gpa: i << 20, bytes: 1 << 20, kind: "ram" })),
    }),
  );
  const registers = Uint8Array.from({ length: 2 * 1536 }, (_, i) => (i % 8 < 3 ? next() * 256 : 0));
  const touched = new Uint8Array(GUEST_PAGES / 8);
  touched.fill(0xff, 0, touched.length / 4); // the 256 MiB data setup
  for (let i = 0; i < 300; i++) touched[Math.floor(next() * touched.length)] = 1 << Math.floor(next() * 8);
  const free = runsBitmap(0xf3ee);
  const pages = new Uint8Array(16 * 4096); // page tables: a few entries each, some pages empty
  for (let page = 0; page < 16; page += 2) for (let entry = 0; entry < 24; entry++) pages[page * 4096 + entry * 8] = 0x63 + entry;
  const parts = [meta, registers, touched, free, pages];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((at, p) => (out.set(p, at), at + p.length), 0);
  return out;
}

function codecSection(runs: number): void {
  const raw = descriptorShapedPayload();
  const coded = encodeZeroElided(raw);
  const deflated = deflateSync(raw, { level: 6 });
  const mib = raw.length / 2 ** 20;
  const rate = (perSecond: number): string => `${(perSecond * mib).toFixed(0)} MiB/s`;
  console.log(
    `descriptor codec: a ${(raw.length / 1024).toFixed(0)} KiB descriptor-shaped payload (1 GiB guest) -> ` +
      `${coded.length} bytes (deflate level 6: ${deflated.length} bytes); median of ${runs} runs`,
  );
  const encoders: Array<[string, () => unknown]> = [
    ["TS  ", () => referenceEncode(raw)],
    ["WASM", () => encodeZeroElided(raw)],
  ];
  console.log("  encode:");
  const encodeRates = runsPerSecond([...encoders, ["zlib", () => deflateSync(raw, { level: 6 })]], runs);
  printRatio(encoders, encodeRates, rate);
  console.log(`    (zlib deflate ${rate(encodeRates[2]!)})`);
  const decoders: Array<[string, () => unknown]> = [
    ["TS  ", () => referenceDecode(coded, raw.length)],
    ["WASM", () => decodeZeroElided(coded, raw.length)],
  ];
  console.log("  decode:");
  const decodeRates = runsPerSecond([...decoders, ["zlib", () => inflateSync(deflated)]], runs);
  printRatio(decoders, decodeRates, rate);
  console.log(`    (zlib inflate ${rate(decodeRates[2]!)})`);
}

if (import.meta.main) {
  console.log(machineNote());
  const runs = argRuns();
  reassemblySection(runs);
  pageBitmapSection(runs);
  codecSection(runs);
}
