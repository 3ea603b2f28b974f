/**
 * The fuzz targets in CI: each decoder gets a fixed budget of cases from a fixed seed, and every
 * input a run ever saved in regressions/ is replayed. `bun test/fuzz/run.ts` fuzzes longer by hand.
 */
import { describe, expect, test } from "bun:test";
import { type Finding, runCase } from "./engine.ts";
import { listRegressions } from "./regressions.ts";
import { fuzzTarget } from "./run-target.ts";
import { TARGETS, targetNamed } from "./targets/index.ts";
import { within } from "../support/time.ts";

const CI_SEED = 20261202;

/** Cases per target in CI: all targets together well under a minute on a loaded 2-core machine. */
const CI_CASES: Record<string, number> = {
  "descriptor-envelope": 10_000,
  descriptor: 8000,
  "descriptor-codec": 8000,
  "mcdist-frame": 20_000,
  "mcdist-messages": 20_000,
  "mcdist-reassembly": 3000,
  "agent-request": 10_000,
  "agent-answer": 8000,
  "clone-order": 8000,
  "family-event": 8000,
  "page-protocol": 20_000,
  "page-server-address": 8000,
  "vmm-control": 6000,
  "launch-record": 10_000,
};

interface KnownFinding {
  target: string;
  /** What the finding says: `<kind> <error> at <where>`. */
  matches: RegExp;
  /** Its saved inputs in regressions/<target>/ (replayed as expected to fail until the fix lands). */
  files: string[];
  reason: string;
}

/**
 * Bugs the fuzzers found that are not fixed yet. Remove an entry when its fix lands: the replay
 * of its files is marked test.failing, so it turns red the moment the bug is gone.
 */
const KNOWN_FINDINGS: KnownFinding[] = [];

const describeFinding = (f: Finding) => `${f.kind} ${f.error}${f.where ? ` at ${f.where}` : ""}`;
const known = (f: Finding) => KNOWN_FINDINGS.some((k) => k.target === f.target && k.matches.test(describeFinding(f)));

describe("fuzz targets (fixed CI budget)", () => {
  test("every target has a CI budget", () => {
    expect(TARGETS.map((t) => t.name).filter((name) => !(name in CI_CASES))).toEqual([]);
  });

  for (const target of TARGETS) {
    const cases = CI_CASES[target.name] ?? 0;
    test(
      `${target.name}: ${cases} cases from seed ${CI_SEED}`,
      async () => {
        const report = await fuzzTarget(target.name, { seed: CI_SEED, cases });
        const replay = (f: Finding) => `bun test/fuzz/run.ts --target ${f.target} --seed ${f.seed} --start ${f.caseIndex} --cases 1`;
        const fresh = report.findings.filter((f) => !known(f)).map((f) => `${describeFinding(f)} (replay: ${replay(f)})`);
        expect(fresh).toEqual([]);
        // The mutations must reach both sides of the decoder, or the budget tests nothing.
        expect(report.accepted).toBeGreaterThan(cases / 50);
        expect(report.refused).toBeGreaterThan(cases / 50);
      },
      within(120_000),
    );
  }
});

describe("fuzz regressions (every input a run saved)", () => {
  for (const { target, file, input } of listRegressions()) {
    const knownBug = KNOWN_FINDINGS.find((k) => k.target === target && k.files.includes(file));
    (knownBug ? test.failing : test)(`${target}/${file}${knownBug ? " (known finding, expected to fail)" : ""}`, () => {
      const outcome = runCase(targetNamed(target), { input }, 0, 0);
      expect(typeof outcome === "string" ? outcome : describeFinding(outcome)).toMatch(/^(accepted|refused)$/);
    });
  }
});
