/**
 * A guest that tries to grow its host without bound (issue 10, item 8): the `quotas` workload floods
 * a family member that never receives, asks for tickets and checkpoints until refused, and prints
 * more than the console keeps. Each flood must end in SF_EDQUOT at the configured limit, the log
 * and the console lines kept must stay within theirs, and the VMM must carry on to the end.
 */
import { expect, test } from "bun:test";
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { snowflock, testRunDir } from "../support/cli.ts";
import { describeKvm } from "../support/kvm.ts";

const EDQUOT = -122;
const MESSAGE_MAX = 65536;
/** Small limits keep the floods short under emulation; the defaults are checked in test/unit/guest-limits.test.ts. */
const LIMITS = { inboxBytes: 16 * MESSAGE_MAX, tickets: 8, checkpoints: 2, consoleLog: 256 * 1024, consoleMemory: 64 * 1024 };
const LIMITS_TEXT = [
  `inbox-bytes=${LIMITS.inboxBytes}`,
  `tickets=${LIMITS.tickets}`,
  `checkpoints=${LIMITS.checkpoints}`,
  `console-log=${LIMITS.consoleLog}`,
  `console-memory=${LIMITS.consoleMemory}`,
].join(",");
/** The workload's console flood: 256 lines of 3999 'x' (guest/workloads/quotas.c). */
const FLOOD_LINE = "x".repeat(3999);

describeKvm("per-VM limits on what a guest makes its host keep", () => {
  test("messages, tickets and checkpoints past their limits fail with SF_EDQUOT; the console log and lines stay bounded", async () => {
    const runDir = testRunDir();
    const env = { SNOWFLOCK_RUN_DIR: runDir, SNOWFLOCK_GUEST_LIMITS: LIMITS_TEXT };
    const r = await snowflock(["run", "quotas", "--mem", "32M", "--name", "q", "--json"], env, 300_000);
    if (r.status !== 0) throw new Error(`snowflock run quotas ended with ${r.status}: ${r.stderr}`);
    const result = JSON.parse(r.stdout);

    // The guest's account of each flood comes last, after its console flood: among the lines kept.
    const lines: string[] = result.console;
    expect(lines.filter((line) => line.startsWith("quotas "))).toEqual([
      `quotas messages ${LIMITS.inboxBytes / MESSAGE_MAX} then ${EDQUOT}`,
      // The join retires the ticket: a second join is refused as for any joined ticket.
      "quotas join 1 then -16",
      `quotas tickets ${LIMITS.tickets} then ${EDQUOT}`,
      `quotas checkpoints ${LIMITS.checkpoints} then ${EDQUOT}`,
      // A checkpoint released (once: the second time it is unknown) makes room for another.
      "quotas release 0 then -22, checkpoint after it ok",
      "quotas done",
    ]);
    // The console lines kept in memory: the newest, within their limit; the older flood lines left out.
    expect(result.consoleDropped).toBeGreaterThan(0);
    expect(lines.slice(0, -6).every((line) => line === FLOOD_LINE)).toBe(true);
    expect(lines.reduce((sum, line) => sum + Buffer.byteLength(line) + 1, 0)).toBeLessThanOrEqual(LIMITS.consoleMemory);

    // The log: rotated once it reached its cap, so two files within it, the newest lines last.
    const log = join(runDir, "q.log");
    expect(statSync(log).size).toBeLessThanOrEqual(LIMITS.consoleLog);
    expect(statSync(`${log}.1`).size).toBeLessThanOrEqual(LIMITS.consoleLog);
    expect(existsSync(`${log}.2`)).toBe(false);
    const logged = (await Bun.file(log).text()).trimEnd().split("\n");
    expect(logged.slice(-6)).toEqual(lines.slice(-6));
    expect(logged.slice(0, -6).every((line) => line === FLOOD_LINE)).toBe(true);
  });
});
