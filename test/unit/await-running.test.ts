/** awaitRunning (vmm/spawn.ts): a VMM seen ending counts as started when it said it runs first. */
import { expect, test } from "bun:test";
import { runningLine, runningTimes, type StartTimes } from "../../src/vmm/launch-clock.ts";
import { awaitRunning, type StartingVmm } from "../../src/vmm/spawn.ts";
import { testRunDir } from "../support/cli.ts";

process.env.SNOWFLOCK_RUN_DIR = testRunDir();

const times = { builtMs: 3.5, runningMs: 4.25 };
const ended = (why: string, said?: StartTimes): StartingVmm => ({ pid: 4242, stopped: () => why, said: () => said, kill: () => {} });
const never = new Promise<StartTimes>(() => {});

test("a VMM that said it runs and ended at once (its work done) is reported running with its times", async () => {
  expect(await awaitRunning("fast.1", ended("status 0", times))).toEqual({ pid: 4242, times });
  expect(await awaitRunning("fast.2", ended("status 0", times), never)).toEqual({ pid: 4242, times });
});

test("a VMM that ended without saying it runs is a failure naming why", async () => {
  await expect(awaitRunning("dead.1", ended("bad launch record"), never)).rejects.toThrow(
    "VM 'dead.1' stopped right after starting: bad launch record",
  );
});

test("an announcement that fails is no start either", async () => {
  const refused = Promise.reject(new Error("the parent went away"));
  await expect(awaitRunning("dead.2", ended("status 1"), refused)).rejects.toThrow("VM 'dead.2' stopped right after starting: status 1");
});

test("running lines: what one says comes back; other lines and malformed ones are none", () => {
  expect(runningTimes(runningLine(times))).toEqual(times);
  for (const line of ["", "running", "running {", 'running {"builtMs":1}', "error: no /dev/kvm", `x${runningLine(times)}`])
    expect(runningTimes(line)).toBeUndefined();
});
