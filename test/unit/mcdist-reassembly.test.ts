import { describe, expect, test } from "bun:test";
import { type Frame, fragment, FrameType } from "../../src/mcdist/frame.ts";
import { Reassembly } from "../../src/mcdist/reassembly.ts";

const object = Uint8Array.from({ length: 4112 }, (_, i) => (i * 31 + 7) & 0xff);
const frames = (page: bigint, sequence = 1, data = object, mtu = 1000) => fragment(FrameType.PAGE, 9, sequence, page, data, mtu);

/** A deterministic shuffle (xorshift), so a failure can be replayed. */
function shuffle<T>(items: T[], seed: number): T[] {
  const out = items.slice();
  let s = seed || 1;
  for (let i = out.length - 1; i > 0; i--) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    const j = (s >>> 0) % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

describe("mcdist reassembly", () => {
  test("fragments in any order, with duplicates, give the object back exactly once", () => {
    for (let seed = 1; seed <= 50; seed++) {
      const r = new Reassembly({ maxPartial: 8, maxObjectBytes: 8192 });
      const parts = frames(3n);
      expect(parts.length).toBe(5);
      const arrivals = shuffle([...parts, ...parts.slice(0, 2)], seed);
      const done = arrivals.map((f) => r.add(f)).filter((x) => x !== undefined);
      expect(done).toHaveLength(1);
      expect(done[0]).toEqual(object);
      expect(r.pending).toBeLessThanOrEqual(1); // duplicates arriving after completion start a stale partial
    }
  });

  test("duplicates before completion are counted; a duplicate after completion starts a new (stale) partial", () => {
    const r = new Reassembly({ maxPartial: 8, maxObjectBytes: 8192 });
    const parts = frames(3n);
    r.add(parts[0]!);
    r.add(parts[0]!);
    expect(r.counters.duplicates).toBe(1);
    for (const f of parts.slice(1)) r.add(f);
    expect(r.counters.completed).toBe(1);
    expect(r.pending).toBe(0);
  });

  test("interleaved objects and separate sends of one object do not mix", () => {
    const r = new Reassembly({ maxPartial: 8, maxObjectBytes: 8192 });
    const other = object.map((b) => b ^ 0xff);
    const a = frames(1n, 1);
    const b = frames(1n, 2, other); // same page, another send: must not mix with the first
    const got: Uint8Array[] = [];
    for (let i = 0; i < a.length; i++) {
      for (const f of [a[i]!, b[i]!]) {
        const done = r.add(f);
        if (done) got.push(done);
      }
    }
    expect(got).toEqual([object, other]);
  });

  test("a fragment count that disagrees with its send is dropped; the send still completes", () => {
    const r = new Reassembly({ maxPartial: 8, maxObjectBytes: 8192 });
    const parts = frames(5n);
    r.add(parts[0]!);
    const liar: Frame = { ...parts[1]!, fragments: 7 };
    expect(r.add(liar)).toBeUndefined();
    expect(r.add({ ...parts[1]!, fragment: 9, fragments: 5 })).toBeUndefined();
    expect(r.counters.inconsistent).toBe(2);
    let done: Uint8Array | undefined;
    for (const f of parts.slice(1)) done = r.add(f) ?? done;
    expect(done).toEqual(object);
  });

  test("single-fragment objects complete at once; oversized sends are dropped", () => {
    const r = new Reassembly({ maxPartial: 8, maxObjectBytes: 4112 });
    expect(r.add(frames(1n, 1, new Uint8Array(100))[0]!)).toEqual(new Uint8Array(100));
    const big = frames(2n, 1, new Uint8Array(6000));
    expect(big.map((f) => r.add(f)).every((x) => x === undefined)).toBe(true);
    expect(r.counters.oversized).toBe(1);
  });

  test("beyond maxPartial the oldest partial object is evicted", () => {
    const r = new Reassembly({ maxPartial: 3, maxObjectBytes: 8192 });
    const sends = [1n, 2n, 3n, 4n].map((page) => frames(page));
    for (const s of sends) r.add(s[0]!);
    expect(r.pending).toBe(3);
    expect(r.counters.evicted).toBe(1);
    // Page 1 was evicted: its remaining fragments start over and never complete.
    expect(
      sends[0]!
        .slice(1)
        .map((f) => r.add(f))
        .every((x) => x === undefined),
    ).toBe(true);
    // Page 4 is still there and completes.
    let done: Uint8Array | undefined;
    for (const f of sends[3]!.slice(1)) done = r.add(f) ?? done;
    expect(done).toEqual(object);
  });
});
