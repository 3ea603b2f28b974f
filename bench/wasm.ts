/**
 * WASM kernels against their plain TypeScript references, in-process (no VM, no network).
 * Prints operations per second for each (median of several runs) and the ratio.
 *
 *   bun bench/wasm.ts [--runs 9]
 *
 * Needs the kernels built first: `bun wasm/build.ts`.
 *
 * Sections:
 *   reassembly  mcdist fragment reassembly, src/wasm/reassembly.ts (WasmReassembly) vs
 *               src/mcdist/reassembly.ts (Reassembly): 4112-byte page objects at MTU 1500
 *               (3 fragments each), as the client configures it (512 partial objects).
 *   fetch plan  which pages a clone fetches (src/heuristics, on the page-bitmap kernel) vs the
 *               byte-by-byte reference, for a 1 GiB guest's bitmaps.
 */
import { type Frame, fragment, FrameType } from "../src/mcdist/frame.ts";
import { Reassembly } from "../src/mcdist/reassembly.ts";
import { WasmReassembly } from "../src/wasm/reassembly.ts";
import { machineNote, median } from "./machine.ts";
import { planFetches } from "../src/heuristics/heuristics.ts";
import { referenceFetchPlan } from "../test/support/fetch-plan-reference.ts";

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
  console.log(`reassembly: ${PAGES} objects of ${PAGE_OBJECT} B at MTU ${MTU} (${pages[0]!.length} fragments each), maxPartial ${MAX_PARTIAL}, median of ${runs} runs`);
  for (const [name, frames] of [["in order", inOrder(pages)], ["interleaved (64-page windows shuffled, 10% duplicates)", interleaved(pages)]] as const) {
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

/** The fetch plan of a 1 GiB guest (262144 pages): WASM page-bitmap kernel vs the byte-wise reference. */
function fetchPlanSection(runs: number): void {
  const bytes = (1 << 30) / 4096 / 8;
  const next = xorshift(0xb17);
  const nonZero = Uint8Array.from({ length: bytes }, () => next() & 0xff);
  const free = Uint8Array.from({ length: bytes }, () => next() & 0xff);
  const impls: Array<[string, () => unknown]> = [
    ["TS  ", () => referenceFetchPlan(nonZero, free, [])],
    ["WASM", () => planFetches(nonZero, free, [])],
  ];
  for (const [, plan] of impls) for (let i = 0; i < 5; i++) plan();
  const samples = impls.map(() => [] as number[]);
  for (let run = 0; run < runs; run++) {
    impls.forEach(([, plan], i) => {
      const started = performance.now();
      plan();
      samples[i]!.push(1000 / (performance.now() - started));
    });
  }
  const medians = samples.map(median);
  console.log(`fetch plan: a 1 GiB guest's bitmaps (${bytes * 8} pages), known-zero and free-pages on, median of ${runs} runs`);
  impls.forEach(([impl], i) => console.log(`    ${impl} ${medians[i]!.toFixed(0)} plans/s`));
  console.log(`    WASM / TS = ${(medians[1]! / medians[0]!).toFixed(2)}x`);
}

if (import.meta.main) {
  console.log(machineNote());
  const runs = argRuns();
  reassemblySection(runs);
  fetchPlanSection(runs);
}
