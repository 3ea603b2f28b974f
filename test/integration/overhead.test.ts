/**
 * `snowflock bench overhead` end to end, in its short form: the compute workload runs its rounds in
 * a parent, in a cow and an ondemand clone of it on this host, and in an ondemand clone on another
 * test host; every round's digest is the host's, and each clone's overhead is measured against
 * its own parent. (The figures are the benchmark's; here only that they exist.)
 */
import { expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { OverheadReport } from "../../src/bench/overhead.ts";
import { snowflock, testRunDir } from "../support/cli.ts";
import { describeKvm } from "../support/kvm.ts";
import { describeNetns } from "../support/netns.ts";

describeNetns("bench overhead", () => {
  describeKvm("compute rounds in clones vs all memory present", () => {
    test("one run of 3 rounds: the parent, a cow and an ondemand clone here, an ondemand clone on h2; digests right", async () => {
      const out = mkdtempSync(join(tmpdir(), "snowflock-overhead-"));
      try {
        const r = await snowflock(
          ["bench", "overhead", "--runs", "1", "--rounds", "3", "--passes", "1", "--size", "256K", "--out", out, "--json"],
          { SNOWFLOCK_RUN_DIR: testRunDir() },
          300_000,
        );
        expect(r.stderr).not.toContain("MISMATCH/FAILURE");
        const report = JSON.parse(r.stdout) as OverheadReport;
        expect(report.badRuns).toBe(0);
        expect(r.status).toBe(0);
        expect("rows" in report.crossHost).toBe(true);
        const rows = [...report.local, ...("rows" in report.crossHost ? report.crossHost.rows : [])];
        expect(rows.map((row) => [row.vm, row.host, row.memory, row.available])).toEqual([
          ["parent (all memory present)", "local", undefined, true],
          ["cow clone", "local", "cow", true],
          ["ondemand clone", "local", "ondemand", true],
          ["parent (all memory present)", "h1", undefined, true],
          ["clone on another host (packet)", "h2", "ondemand", true],
        ]);
        for (const row of rows) {
          expect(row.perRoundMs).toHaveLength(3);
          expect(row.roundMs).toBeGreaterThan(0);
          expect(row.warmUpMs).toBeGreaterThan(0);
          if (row.memory) expect(Number.isFinite(row.overheadPct)).toBe(true);
        }
        expect(readFileSync(join(out, "overhead.svg"), "utf8")).toContain("<svg");
      } finally {
        rmSync(out, { recursive: true, force: true });
      }
    });

    test("bad options are refused before any VM starts", async () => {
      const runDir = testRunDir();
      for (const [args, message] of [
        [["--rounds", "1"], "--rounds 2 or more"],
        [["--hosts", "1"], "--hosts takes 0 (skip) or 2 or more"],
        [["--memory", "eager"], "eager"],
        [["--size", "1G", "--mem", "64M"], "memory"],
      ] as Array<[string[], string]>) {
        const r = await snowflock(["bench", "overhead", ...args], { SNOWFLOCK_RUN_DIR: runDir });
        expect(r.status).not.toBe(0);
        expect(r.stderr).toContain(message);
      }
    });
  });
});
