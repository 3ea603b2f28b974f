/**
 * The Xen fork benchmark's report (src/bench/xen-fork.ts): the eager table always, the on-demand
 * table only with its figures, and a missing on-demand path said in one line. The runs themselves
 * need a Xen dom0 (`bash test/xen/run.sh -- dist/snowflock-baseline bench fork --backend xen`).
 */
import { expect, test } from "bun:test";
import { formatReport, plotReport, type XenForkReport } from "../../src/bench/xen-fork.ts";

const eagerRow = (clones: number) => ({
  clones,
  snowflockMs: 2000 * clones,
  shellsMs: 500,
  parentDownMs: 900,
  xlMs: 3000 * clones,
  xlSaveMs: 1000,
  xlRestoreMs: 3000 * clones - 1000,
  ratio: 1.5,
});

const base: XenForkReport = {
  benchmark: "snowflock fork --backend xen vs xl save -c + N x xl restore",
  machine: "test machine",
  xen: "Xen 4.17.5",
  memoryBytes: 256 << 20,
  runs: 1,
  rows: [eagerRow(1), eagerRow(2)],
};

test("with on-demand figures: a second table with page-out, parent down, pages fetched (of the domU's pages) and the ratio", () => {
  const report: XenForkReport = {
    ...base,
    rows: base.rows.map((r) => ({
      ...r,
      onDemand: { totalMs: 1000, pageOutMs: 600, parentDownMs: 300, pagesFetchedPerClone: 6553.6, ratio: r.xlMs / 1000 },
    })),
  };
  const text = formatReport(report);
  expect(text).toContain("xl/eager");
  expect(text).toContain("of it page-out s");
  expect(text).toContain("6554 (10.0%)");
  expect(text).toContain("6.00x");
  expect(text).not.toContain("unavailable");
  expect(plotReport(report)).toContain("snowflock fork --memory ondemand");
});

test("without paging: only the eager table, and why on demand is missing", () => {
  const text = formatReport({ ...base, onDemandUnavailable: "--memory ondemand needs Xen's memory paging: no CONFIG_MEM_PAGING" });
  expect(text).toContain("on demand: unavailable (--memory ondemand needs Xen's memory paging: no CONFIG_MEM_PAGING)");
  expect(text).not.toContain("page-out");
  expect(plotReport(base)).not.toContain("ondemand");
});
