/**
 * The Xen fork benchmark's report (src/bench/xen-fork.ts): the eager table always, the on-demand
 * table only with its figures, and a missing on-demand path said in one line. The runs themselves
 * need a Xen dom0 (`bash test/xen/run.sh -- dist/snowflock-baseline bench fork --backend xen`).
 */
import { expect, test } from "bun:test";
import {
  formatReport as formatXenClusterReport,
  plotReport as plotXenClusterReport,
  type XenClusterReport,
} from "../../src/bench/xen-cluster.ts";
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

test("with on-demand figures: ready shells' pool time, page-out per frame, parent down, pages fetched (of the domU's pages), ratios", () => {
  const report: XenForkReport = {
    ...base,
    rows: base.rows.map((r) => ({
      ...r,
      eagerReady: { totalMs: 1500, parentDownMs: 800, poolMs: 700, ratio: r.xlMs / 1500 },
      onDemand: { totalMs: 1000, pageOutMs: 600, parentDownMs: 300, pagesFetchedPerClone: 6553.6, ratio: r.xlMs / 1000 },
      onDemandReady: {
        totalMs: 400,
        parentDownMs: 300,
        poolMs: 900,
        pageOutMicrosPerFrame: 143.4,
        pagesFetchedPerClone: 6553.6,
        ratio: r.xlMs / 400,
        phases: { suspendMs: 120, captureMs: 150, resumeMs: 30, startMs: 70 },
      },
    })),
  };
  const text = formatReport(report);
  expect(text).toContain("xl/eager");
  expect(text).toContain("page-out µs/frame");
  expect(text).toContain(" 143 ");
  expect(text).toContain("6554 (10.0%)");
  expect(text).toContain("15.00x");
  expect(text).not.toContain("unavailable");
  expect(text).toContain("where the time goes");
  expect(text).toMatch(/^1 +0\.12 +0\.15 +0\.03 +0\.07$/m);
  const plot = plotReport(report);
  expect(plot).toContain("snowflock fork --memory ondemand, shells ready");
  expect(plot).toContain("snowflock fork (eager), shells ready");
});

test("without paging: only the eager table, and why on demand is missing", () => {
  const text = formatReport({ ...base, onDemandUnavailable: "--memory ondemand needs Xen's memory paging: no CONFIG_MEM_PAGING" });
  expect(text).toContain("on demand: unavailable (--memory ondemand needs Xen's memory paging: no CONFIG_MEM_PAGING)");
  expect(text).not.toContain("page-out");
  expect(text).not.toContain("where the time goes");
  expect(plotReport(base)).not.toContain("ondemand");
  expect(plotReport(base)).not.toContain("shells ready");
});

test("the Xen cluster benchmark's report: a row per hosts x transport x N with its ratios to the two baselines, and whether each goal is met", () => {
  const row = (hosts: number, clones: number, totalMs: number, serverBytes: number, transport?: "tcp" | "packet") => ({
    hosts,
    ...(transport && { transport }),
    clones,
    totalMs,
    parentDownMs: 900,
    remoteClones: hosts === 1 ? 0 : Math.ceil(clones / 2),
    serverBytes,
    serverPages: serverBytes / 4096,
    hostsServed: hosts - 1,
    timeRatio: totalMs / 10_000,
    bytesRatio: serverBytes > 0 ? serverBytes / (40 << 20) : undefined,
  });
  const rows = [
    row(1, 8, 30_000, 0),
    row(2, 1, 12_000, 40 << 20, "tcp"),
    row(2, 8, 25_000, 41 << 20, "tcp"),
    row(2, 8, 27_000, 41 << 20, "packet"),
  ];
  const report: XenClusterReport = {
    benchmark: "snowflock fork --cluster --backend xen (eager memory)",
    machine: "test machine",
    xen: "Xen 4.17.5",
    memoryBytes: 256 << 20,
    runs: 3,
    hostNames: ["h1", "h2"],
    oneHereMs: 10_000,
    oneRemoteBytes: { tcp: 40 << 20, packet: 40 << 20 },
    rows,
    goals: [],
  };
  const text = formatXenClusterReport(report);
  expect(text).toContain(
    "baselines: one clone on the parent's host 10.00 s; one clone on another host: server 41.9 MB (tcp), 41.9 MB (packet)",
  );
  expect(text).toMatch(/^ +2 +tcp +8 +4 +25\.00 +2\.50x +0\.90 +43\.0 MB +10496 +1 +1\.02x$/m);
  expect(text).toMatch(/^ +2 +packet +8 +4 +27\.00 +2\.70x /m);
  expect(text).toMatch(/^ +1 +- +8 +0 +30\.00 +3\.00x .* +- *$/m);
  expect(plotXenClusterReport(report)).toContain("over 2 hosts (tcp)");
  expect(plotXenClusterReport(report)).toContain("over 2 hosts (packet)");
  const met = {
    ...report,
    goals: [
      { goal: "g", value: "v", met: true },
      { goal: "h", value: "w", met: false },
    ],
  };
  expect(formatXenClusterReport(met)).toContain("goals:\n  met: g: v\n  NOT met: h: w");
});
