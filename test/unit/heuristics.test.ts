/** Which pages a clone fetches: the WASM plan against a byte-by-byte reference, for every switch. */
import { expect, test } from "bun:test";
import { HEURISTICS, type Heuristic, parseHeuristics, planFetches } from "../../src/heuristics/heuristics.ts";
import { referenceFetchPlan } from "../support/fetch-plan-reference.ts";
import { Rng } from "../support/rng.ts";

test("planFetches agrees with the reference for random bitmaps and every set of heuristics off", () => {
  const rng = new Rng(0x5eed);
  const offs: Heuristic[][] = [[], ["known-zero"], ["free-pages"], ["prefetch"], [...HEURISTICS]];
  for (let round = 0; round < 200; round++) {
    const bytes = rng.int(1, 300);
    const nonZero = rng.bytes(bytes);
    const free = rng.bool(0.8) ? rng.bytes(bytes) : undefined;
    for (const off of offs) expect(planFetches(nonZero, free, off)).toEqual(referenceFetchPlan(nonZero, free, off));
  }
});

test("heuristic names are checked", () => {
  expect(parseHeuristics(["free-pages", "free-pages"])).toEqual(["free-pages"]);
  expect(() => parseHeuristics(["telepathy"])).toThrow("unknown heuristic 'telepathy'");
});
