/** The fuzz engine's oracle and bookkeeping, on small targets whose behaviour is known. */
import { describe, expect, test } from "bun:test";
import { SnowflockError } from "../../src/errors.ts";
import { CASE_TIME_MS, corpusOf, type Finding, type FuzzTarget, makeCase, minimize, runCase } from "./engine.ts";
import { fuzzTarget } from "./run-target.ts";
import { descriptorTarget } from "./targets/descriptor.ts";

/** Refuses input starting with 0, crashes (TypeError) on any input holding 0x42, and is slow on 0x51. */
const toy: FuzzTarget = {
  name: "toy",
  seeds: () => [Uint8Array.of(1, 2, 3)],
  run(input) {
    if (input.includes(0x42)) (null as unknown as { x: number }).x;
    if (input[0] === 0x51) Bun.sleepSync(CASE_TIME_MS + 50);
    if (input[0] === 0) throw new SnowflockError("USAGE", "refused");
    return "accepted";
  },
  expected: (error) => error instanceof SnowflockError,
};

describe("fuzz engine", () => {
  test("a return is accepted, the documented error refused, any other exception a crash", () => {
    expect(runCase(toy, { input: Uint8Array.of(1) }, 1, 0)).toBe("accepted");
    expect(runCase(toy, { input: Uint8Array.of(0) }, 1, 0)).toBe("refused");
    const crash = runCase(toy, { input: Uint8Array.of(1, 0x42) }, 1, 7) as Finding;
    expect(crash.kind).toBe("crash");
    expect(crash.error).toStartWith("TypeError");
    expect(crash.caseIndex).toBe(7);
  });

  test("a case over the time bound is a finding", () => {
    expect((runCase(toy, { input: Uint8Array.of(0x51) }, 1, 0) as Finding).kind).toBe("slow");
  });

  test("minimizing keeps the crash and drops what does not cause it", () => {
    const input = Uint8Array.from({ length: 300 }, (_, i) => (i === 123 ? 0x42 : 1));
    const crash = runCase(toy, { input }, 1, 0) as Finding;
    expect(minimize(toy, crash)).toEqual(Uint8Array.of(0x42));
  });

  test("a case is a pure function of seed and index", () => {
    const corpus = corpusOf(descriptorTarget, 5);
    expect(corpusOf(descriptorTarget, 5)).toEqual(corpus);
    const inputs = (seed: number) =>
      Array.from({ length: 30 }, (_, i) => makeCase(descriptorTarget, corpus, seed, i)).map((c) => ("input" in c ? c.input : "round trip"));
    expect(inputs(5)).toEqual(inputs(5));
    expect(inputs(6)).not.toEqual(inputs(5));
  });
});

test("a case that never returns is ended by the watchdog and reported with its input; the run carries on", async () => {
  const module = new URL("./fixtures/hang-target.ts", import.meta.url).href;
  const report = await fuzzTarget("hang", { seed: 3, cases: 40, hangMs: 500, module });
  const hangs = report.findings.filter((f) => f.kind === "slow");
  expect(hangs.length).toBeGreaterThan(0);
  for (const f of hangs) expect(f.input).toEqual(Uint8Array.of(0x99));
  // The cases after a hang still ran, in a new Worker.
  expect(Math.max(...hangs.map((f) => f.caseIndex))).toBeLessThan(39);
  expect(report.accepted).toBeGreaterThan(0);
}, 60_000);
