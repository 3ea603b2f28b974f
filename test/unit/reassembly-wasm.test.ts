// Property tests: the WebAssembly fragment-reassembly kernel (through
// WasmReassembly in src/wasm/reassembly.ts) against the plain TypeScript
// Reassembly (src/mcdist/reassembly.ts), frame by frame: same result (object
// bytes or nothing), same counters, same number of objects in progress.
//
// Needs the kernel to be built first: `bun wasm/build.ts`.
// Set REASSEMBLY_SEED=<n> to rerun with another PRNG seed.

import { describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { Rng } from "../support/rng.ts";
import { type Frame, fragment, FrameType, MAX_FRAGMENTS } from "../../src/mcdist/frame.ts";
import { Reassembly, type ReassemblyCounters } from "../../src/mcdist/reassembly.ts";

const WASM_FILE = join(import.meta.dir, "..", "..", "wasm", "build", "reassembly.wasm");
if (!existsSync(WASM_FILE)) {
  throw new Error(`${WASM_FILE} is missing: build the WebAssembly kernels first with \`bun wasm/build.ts\``);
}
const { WasmReassembly, instantiateReassemblyKernel, ReassemblyStatus } = await import("../../src/wasm/reassembly.ts");

const BASE_SEED = Number(process.env.REASSEMBLY_SEED ?? 0x0f1a_5eed) >>> 0;
const PAGE_OBJECT = 4112;
const OBJECTS = [0n, 1n, 2n, 3n, 7n, 2n ** 53n + 1n, 2n ** 63n, 2n ** 64n - 1n];

function counters(c: ReassemblyCounters): ReassemblyCounters {
  return { completed: c.completed, duplicates: c.duplicates, inconsistent: c.inconsistent, oversized: c.oversized, evicted: c.evicted };
}

type Pair = { ts: Reassembly; wasm: InstanceType<typeof WasmReassembly> };

function pair(maxPartial: number, maxObjectBytes: number): Pair {
  return { ts: new Reassembly({ maxPartial, maxObjectBytes }), wasm: new WasmReassembly({ maxPartial, maxObjectBytes }) };
}

/** Feeds one frame to both; checks result, counters and pending; returns the result. */
function feed(p: Pair, frame: Frame, what: string): Uint8Array | undefined {
  const want = p.ts.add(frame);
  const got = p.wasm.add(frame);
  const desc =
    `${what}: object ${frame.object} seq ${frame.sequence} fragment ${frame.fragment}/${frame.fragments} ` +
    `(${frame.payload.byteLength} B)`;
  if (want === undefined) expect(got, desc).toBeUndefined();
  else expect(got, desc).toEqual(want);
  expect(counters(p.wasm.counters), `${desc}: counters`).toEqual(counters(p.ts.counters));
  expect(p.wasm.pending, `${desc}: pending`).toBe(p.ts.pending);
  return got;
}

interface Send {
  object: bigint;
  sequence: number;
  data: Uint8Array;
  frames: Frame[];
}

/** One send of a random object (0..4112 bytes) at a random per-frame capacity. */
function randomSend(rng: Rng, objects: readonly bigint[], sequences: number): Send {
  const size = rng.bool(0.5) ? PAGE_OBJECT : rng.int(0, PAGE_OBJECT);
  const minCapacity = Math.max(1, Math.ceil(size / MAX_FRAGMENTS));
  const capacity = Math.max(minCapacity, rng.pick([1468, 1468, 8968, 1000, 512, 100, rng.int(1, PAGE_OBJECT + 10)]));
  const object = rng.pick(objects);
  const sequence = rng.int(0, sequences - 1) + (rng.bool(0.05) ? 0xffff_fff0 : 0);
  const data = rng.bytes(size);
  const frames = fragment(FrameType.PAGE, 9, sequence, object, data, capacity + 32);
  return { object, sequence, data, frames };
}

/** A frame changed so that it no longer agrees with its send. */
function corrupt(rng: Rng, f: Frame): Frame {
  switch (rng.int(0, 4)) {
    case 0: // another fragment count (0..MAX_FRAGMENTS)
      return { ...f, fragments: rng.int(0, MAX_FRAGMENTS) };
    case 1: // index beyond the count
      return { ...f, fragment: f.fragments + rng.int(0, 3) };
    case 2: // single-fragment claim with a nonzero index
      return { ...f, fragments: 1, fragment: rng.int(1, 3) };
    case 3: // a payload of another length (the reference concatenates whatever it got)
      return { ...f, payload: rng.bytes(rng.int(0, 2000)) };
    default: // a huge payload
      return { ...f, payload: rng.bytes(rng.int(4000, 9000)) };
  }
}

/** The frames of `sends`, with loss, duplicates, corruption, in a random interleaving. */
function arrivals(rng: Rng, sends: Send[]): Frame[] {
  const loss = rng.pick([0, 0, 0.05, 0.3]);
  const dup = rng.pick([0, 0.05, 0.3]);
  const bad = rng.pick([0, 0, 0.02, 0.15]);
  const out: Frame[] = [];
  for (const s of sends) {
    const frames = s.frames.filter(() => !rng.bool(loss));
    const extra = frames.filter(() => rng.bool(dup));
    const batch = [...frames, ...extra].map((f) => (rng.bool(bad) ? corrupt(rng, f) : f));
    if (rng.bool(0.5)) rng.shuffle(batch);
    out.push(...batch);
  }
  switch (rng.int(0, 2)) {
    case 0: // send after send (each possibly shuffled within)
      return out;
    case 1: // fully interleaved
      return rng.shuffle(out);
    default: {
      // locally reordered: swap within a small window
      for (let i = 0; i < out.length; i++) {
        const j = Math.min(out.length - 1, i + rng.int(0, 6));
        [out[i], out[j]] = [out[j]!, out[i]!];
      }
      return out;
    }
  }
}

describe("WasmReassembly matches the TypeScript Reassembly", () => {
  test("random sends: sizes, capacities, order, loss, duplicates, corruption, eviction", () => {
    const rng = new Rng(BASE_SEED);
    let completedIntact = 0;
    for (let round = 0; round < 400; round++) {
      const what = `seed ${BASE_SEED} round ${round}`;
      const maxPartial = rng.pick([0, 1, 2, 3, 4, 8, 64, rng.int(0, 16)]);
      const maxObjectBytes = rng.pick([PAGE_OBJECT, PAGE_OBJECT, 8192, 4096, 2000, 0, rng.int(0, 9000)]);
      const p = pair(maxPartial, maxObjectBytes);
      const objects = OBJECTS.slice(0, rng.int(1, OBJECTS.length));
      const sends = Array.from({ length: rng.int(1, 40) }, () => randomSend(rng, objects, rng.int(1, 4)));
      const byKey = new Map(sends.map((s) => [`${s.object}/${s.sequence}`, s]));
      for (const frame of arrivals(rng, sends)) {
        const got = feed(p, frame, what);
        if (got !== undefined && byKey.get(`${frame.object}/${frame.sequence}`)?.data.byteLength === got.byteLength) completedIntact++;
        if (rng.bool(0.002)) {
          p.ts.clear();
          p.wasm.clear();
          expect(p.wasm.pending, `${what}: pending after clear`).toBe(0);
        }
      }
    }
    expect(completedIntact).toBeGreaterThan(1000); // the comparison did cover completions
  });

  test("every send completes intact when nothing is lost or corrupted and slots suffice", () => {
    const rng = new Rng(BASE_SEED ^ 0x1234);
    for (let round = 0; round < 100; round++) {
      const what = `seed ${BASE_SEED} round ${round}`;
      const p = pair(64, PAGE_OBJECT);
      // Distinct (object, sequence) keys, fully interleaved, each frame possibly twice.
      const sends = Array.from({ length: rng.int(1, 60) }, (_, i) => randomSend(rng, [BigInt(i)], 1));
      const frames = rng.shuffle(sends.flatMap((s) => s.frames.flatMap((f) => (rng.bool(0.2) ? [f, f] : [f]))));
      const seen = new Map<bigint, Uint8Array>();
      for (const f of frames) {
        const got = feed(p, f, what);
        // (An object can complete again when all its fragments come twice, the copies after it completed.)
        if (got !== undefined) {
          if (seen.has(f.object)) expect(got, `${what}: object ${f.object} again`).toEqual(seen.get(f.object)!);
          seen.set(f.object, got.slice()); // a view until the next add
        }
      }
      for (const s of sends) expect(seen.get(s.object), `${what}: object ${s.object}`).toEqual(s.data);
    }
  });

  test("eviction: more partial objects than slots, oldest first", () => {
    const rng = new Rng(BASE_SEED ^ 0xe71c);
    for (let round = 0; round < 60; round++) {
      const what = `seed ${BASE_SEED} round ${round}`;
      const slots = rng.int(1, 12);
      const p = pair(slots, PAGE_OBJECT);
      const sends = Array.from({ length: slots * rng.int(2, 5) }, (_, i) => {
        const data = rng.bytes(PAGE_OBJECT);
        return fragment(FrameType.PAGE, 9, rng.int(0, 1), BigInt(i), data, 1500);
      });
      // First fragment of every send, then the rest of them in random order.
      for (const s of sends) feed(p, s[0]!, what);
      expect(p.wasm.counters.evicted).toBe(sends.length - slots);
      for (const f of rng.shuffle(sends.flatMap((s) => s.slice(1)))) feed(p, f, what);
    }
  });

  test("churn: thousands of keys through a full table (hash deletion, eviction, reuse)", () => {
    const rng = new Rng(BASE_SEED ^ 0xc405);
    for (const slots of [5, 16, 100, 512]) {
      const what = `seed ${BASE_SEED} slots ${slots}`;
      const p = pair(slots, PAGE_OBJECT);
      const sends = new Map<string, Frame[]>();
      let totalFrames = 0;
      while (totalFrames < 30000) {
        const object = BigInt(rng.int(0, slots * 4));
        const sequence = rng.int(0, 2);
        const key = `${object}/${sequence}`;
        let frames = sends.get(key);
        if (frames === undefined || frames.length === 0) {
          frames = rng.shuffle(
            fragment(FrameType.PAGE, 9, sequence, object, rng.bytes(rng.int(1, PAGE_OBJECT)), rng.pick([1500, 1000, 600])),
          );
          sends.set(key, frames);
        }
        feed(p, rng.bool(0.05) ? frames[0]! : frames.pop()!, what);
        totalFrames++;
      }
      expect(p.wasm.counters.evicted, what).toBeGreaterThan(0);
      expect(p.wasm.counters.completed, what).toBeGreaterThan(100);
    }
  });

  test("edge cases: single fragments, zero fragments, empty payloads, maxPartial 0, maxObjectBytes 0", () => {
    const frame = (o: Partial<Frame>): Frame => ({
      type: FrameType.PAGE,
      family: 9,
      sequence: 1,
      object: 5n,
      fragment: 0,
      fragments: 2,
      payload: new Uint8Array(10),
      ...o,
    });
    for (const [maxPartial, maxObjectBytes] of [
      [0, 4112],
      [1, 0],
      [0, 0],
      [2, 20],
      [1, 4112],
    ] as const) {
      const p = pair(maxPartial, maxObjectBytes);
      const what = `maxPartial ${maxPartial} maxObjectBytes ${maxObjectBytes}`;
      const frames: Frame[] = [
        frame({ fragments: 1 }),
        frame({ fragments: 1, payload: new Uint8Array(0) }),
        frame({ fragments: 1, fragment: 1 }),
        frame({ fragments: 1, payload: new Uint8Array(5000) }),
        frame({ fragments: 0 }),
        frame({ fragments: 0, fragment: 0 }),
        frame({ fragment: 2 }),
        frame({ fragment: 0, payload: new Uint8Array(0) }),
        frame({ fragment: 1, payload: new Uint8Array(0) }),
        frame({ fragment: 0, sequence: 2, payload: Uint8Array.of(1, 2, 3) }),
        frame({ fragment: 0, sequence: 2, fragments: 3 }),
        frame({ fragment: 1, sequence: 2, payload: Uint8Array.of(4) }),
        frame({ fragment: 1, sequence: 3, payload: new Uint8Array(30) }),
        frame({ fragment: 0, sequence: 3, payload: new Uint8Array(30) }),
        frame({ fragment: 63, fragments: 64, object: 2n ** 64n - 1n, sequence: 0xffff_ffff }),
        frame({ fragment: 63, fragments: 64, object: 2n ** 64n - 1n, sequence: 0xffff_ffff }),
      ];
      for (const f of frames) feed(p, f, what);
    }
  });

  test("a result is a view until the next add (no copy per page): a copy taken then stays intact", () => {
    const r = new WasmReassembly({ maxPartial: 4, maxObjectBytes: PAGE_OBJECT });
    const data = Uint8Array.from({ length: PAGE_OBJECT }, (_, i) => i & 0xff);
    const first = fragment(FrameType.PAGE, 9, 1, 1n, data, 1500)
      .map((f) => r.add(f))
      .find((x) => x !== undefined)!;
    expect(first).toEqual(data);
    const kept = first.slice();
    const other = data.map((b) => b ^ 0x5a);
    const second = fragment(FrameType.PAGE, 9, 1, 2n, other, 1500)
      .reverse()
      .map((f) => r.add(f))
      .find((x) => x !== undefined)!;
    expect(second).toEqual(other);
    expect(kept).toEqual(data);
    const single = Uint8Array.of(1, 2, 3);
    const got = r.add({ type: FrameType.PAGE, family: 9, sequence: 1, object: 3n, fragment: 0, fragments: 1, payload: single })!;
    expect(got).toBe(single); // a whole object in one frame is the frame's own payload
  });

  test("counters are live, spreadable and writable like the reference's", () => {
    const r = new WasmReassembly({ maxPartial: 4, maxObjectBytes: PAGE_OBJECT });
    const c = r.counters;
    const f = fragment(FrameType.PAGE, 9, 1, 1n, new Uint8Array(PAGE_OBJECT), 1500)[0]!;
    r.add(f);
    r.add(f);
    expect(c.duplicates).toBe(1);
    expect({ ...r.counters }).toEqual({ completed: 0, duplicates: 1, inconsistent: 0, oversized: 0, evicted: 0 });
    c.duplicates = 0;
    expect(r.counters.duplicates).toBe(0);
  });

  test("options are checked", () => {
    expect(() => new WasmReassembly({ maxPartial: -1, maxObjectBytes: 10 })).toThrow(RangeError);
    expect(() => new WasmReassembly({ maxPartial: 1.5, maxObjectBytes: 10 })).toThrow(RangeError);
    expect(() => new WasmReassembly({ maxPartial: 1, maxObjectBytes: Infinity })).toThrow(RangeError);
    expect(() => new WasmReassembly({ maxPartial: 1 << 20, maxObjectBytes: 1 << 24 })).toThrow(RangeError); // 16 TiB
  });
});

describe("reassembly kernel", () => {
  test("memory never grows after init", () => {
    const k = instantiateReassemblyKernel();
    expect(k.init(512, PAGE_OBJECT)).toBe(1);
    const buffer = k.memory.buffer;
    const input = k.inputPtr() >>> 0;
    const rng = new Rng(BASE_SEED ^ 0x77);
    let completed = 0;
    for (let i = 0; i < 20000; i++) {
      const fragments = rng.int(2, 4);
      const length = rng.int(0, 1468);
      new Uint8Array(k.memory.buffer).fill(i & 0xff, input, input + length);
      const status = k.add(BigInt(rng.int(0, 2000)), rng.int(0, 3), rng.int(0, fragments - 1), fragments, length);
      if (status >= 0) completed++;
      expect(status).toBeGreaterThanOrEqual(ReassemblyStatus.COMPLETE_INPUT);
    }
    expect(completed).toBeGreaterThan(0);
    expect(k.memory.buffer).toBe(buffer);
    expect(k.pending()).toBeLessThanOrEqual(512);
  });

  test("a completed slot's object stays readable until release, then the slot is reused", () => {
    const k = instantiateReassemblyKernel();
    expect(k.init(1, 100)).toBe(1);
    const input = k.inputPtr() >>> 0;
    const put = (bytes: number[]): void => new Uint8Array(k.memory.buffer).set(bytes, input);
    put([1, 2]);
    expect(k.add(7n, 1, 1, 2, 2)).toBe(ReassemblyStatus.PENDING);
    put([3]);
    const slot = k.add(7n, 1, 0, 2, 1);
    expect(slot).toBe(0);
    const at = k.objectPtr(slot) >>> 0;
    expect([...new Uint8Array(k.memory.buffer, at, k.objectLength(slot))]).toEqual([3, 1, 2]);
    k.release(slot);
    put([9]);
    expect(k.add(8n, 1, 0, 2, 1)).toBe(ReassemblyStatus.PENDING);
    expect(k.pending()).toBe(1);
    const view = new BigUint64Array(k.memory.buffer, k.countersPtr() >>> 0, 5);
    expect([...view]).toEqual([1n, 0n, 0n, 0n, 0n]);
  });
});
