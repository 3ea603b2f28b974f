/**
 * `snowflock bench soak` end to end: fork/kill cycles of a running VM on this host and across two
 * test hosts leave the parent VMM's descriptors and memory, the agents, the processes and the run
 * directories as they were. (Each clone round's memory servers used to stay open until the parent
 * ended: six descriptors and ~3 MiB a cross-host round.) The 1,000-cycle run is a benchmark; this
 * is its short form, so a leak of one descriptor a round still shows.
 */
import { expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { SoakReport } from "../../src/bench/soak.ts";
import { snowflock, testRunDir } from "../support/cli.ts";
import { describeKvm } from "../support/kvm.ts";
import { describeNetns } from "../support/netns.ts";
import { lean } from "../support/time.ts";

describeNetns("bench soak", () => {
  describeKvm("fork/kill cycles", () => {
    // Under emulation fewer cycles (after the same warm-up), still enough for a descriptor leaked
    // per round to show.
    const local = lean(30, 6);
    const cross = lean(15, 4);
    test(`${local} local and ${cross} cross-host cycles: every cycle works and the host holds what it held`, async () => {
      const out = mkdtempSync(join(tmpdir(), "snowflock-soak-"));
      try {
        const r = await snowflock(
          ["bench", "soak", "--cycles", String(local), "--cross-cycles", String(cross), "--out", out, "--json"],
          { SNOWFLOCK_RUN_DIR: testRunDir() },
          300_000,
        );
        const report = JSON.parse(r.stdout) as SoakReport;
        expect(report.parts.map((p) => [p.where, p.cycles, p.error])).toEqual([
          ["local", local, undefined],
          ["cross-host", cross, undefined],
        ]);
        for (const part of report.parts) {
          const flat = {
            parentFds: true,
            parentRssBytes: true,
            parentGuestRssBytes: true,
            agentFds: true,
            agentRssBytes: true,
            processes: true,
            runDirEntries: true,
            endedLogs: true,
            dStateTasks: true,
          };
          expect({ where: part.where, ...part.flat }).toEqual({ where: part.where, ...flat });
        }
        expect(report.badRuns).toBe(0);
        expect(r.status).toBe(0);
      } finally {
        rmSync(out, { recursive: true, force: true });
      }
    });
  });
});
