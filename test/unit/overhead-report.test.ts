/**
 * The overhead benchmark's report (src/bench/overhead.ts): each VM's steady round, first round and
 * overhead against its parent; an unavailable path and a skipped cross-host part each said in one
 * line; the plot has a line per VM that ran. The runs themselves: test/integration/overhead.test.ts.
 */
import { expect, test } from "bun:test";
import { formatReport, type OverheadReport, type OverheadRow, plotReport } from "../../src/bench/overhead.ts";

const row = (vm: string, host: string, roundMs: number, memory?: "cow" | "ondemand", overheadPct?: number): OverheadRow => ({
  vm,
  host,
  memory,
  roundMs,
  warmUpMs: roundMs * 3,
  overheadPct,
  perRoundMs: [roundMs * 3, roundMs, roundMs],
  samples: [roundMs],
  available: true,
});

const report: OverheadReport = {
  benchmark: "runtime overhead: test",
  machine: "test machine",
  runs: 5,
  sizeBytes: 1 << 20,
  passes: 4,
  rounds: 3,
  memoryBytes: 64 << 20,
  local: [
    row("parent (all memory present)", "local", 100),
    row("cow clone", "local", 101.5, "cow", 1.5),
    { ...row("ondemand clone", "local", Number.NaN, "ondemand"), available: false, reason: "no userfaultfd", perRoundMs: [] },
  ],
  crossHost: {
    hosts: 2,
    transport: "packet",
    rows: [row("parent (all memory present)", "h1", 99), row("clone on another host (packet)", "h2", 98, "ondemand", -1)],
  },
  badRuns: 0,
};

test("a row per VM: steady and first round, overhead signed against its parent; unavailable paths say why", () => {
  const text = formatReport(report);
  expect(text).toContain("steady = rounds 2-3");
  expect(text).toMatch(/cow clone\s+local\s+101\.5\s+304\.5\s+\+1\.5%/);
  expect(text).toMatch(/parent \(all memory present\)\s+local\s+100\.0\s+300\.0\s+\(baseline\)/);
  expect(text).toMatch(/ondemand clone\s+local\s+-\s+-\s+unavailable: no userfaultfd/);
  expect(text).toMatch(/clone on another host \(packet\)\s+h2\s+98\.0\s+294\.0\s+-1\.0%/);
  expect(formatReport({ ...report, crossHost: { skipped: "--hosts 0" }, badRuns: 2 })).toContain(
    "across hosts: skipped (--hosts 0)\n2 run(s) failed or hashed wrongly (left out)",
  );
});

test("the plot: ms per round for each VM that ran, the parents dashed", () => {
  const svg = plotReport(report);
  expect(svg).toContain("cow clone");
  expect(svg).toContain("clone on another host (packet), h2");
  expect(svg).not.toContain("ondemand clone<");
  expect(svg.match(/stroke-dasharray/g)?.length).toBeGreaterThanOrEqual(2);
});
