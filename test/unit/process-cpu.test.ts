/**
 * CPU time by process (src/bench/process-cpu.ts), which the fork benchmark reads around each fork:
 * real processes, their threads' schedstat counters; and the whole host's, from /proc/stat.
 */
import { expect, test } from "bun:test";
import { cpuByProcess, cpuMsSince, hostCpuMs } from "../../src/bench/process-cpu.ts";

/** Keeps this thread on the CPU for `ms` of wall time. */
function burn(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {}
}

test("counts the CPU a process spends between two looks", () => {
  const before = cpuByProcess([process.pid]);
  burn(60);
  const after = cpuByProcess([process.pid]);
  expect(after.get(process.pid)!).toBeGreaterThan(before.get(process.pid)!);
  // Wall time spinning is CPU time unless another process took the core meanwhile.
  expect(cpuMsSince(before, after)).toBeGreaterThan(20);
});

test("a process absent before counts from its start; one gone is left out", async () => {
  const child = Bun.spawn(["bash", "-c", "for ((i = 0; i < 200000; i++)); do :; done; sleep 5"], { stdout: "ignore" });
  await Bun.sleep(400);
  const running = cpuByProcess([child.pid]);
  expect(cpuMsSince(new Map(), running)).toBeGreaterThan(0);
  child.kill("SIGKILL");
  await child.exited;
  expect(cpuByProcess([child.pid]).has(child.pid)).toBe(false);
});

test("a process counted twice is counted once", () => {
  const spent = cpuByProcess([process.pid, process.pid]);
  expect([...spent.keys()]).toEqual([process.pid]);
});

test("the host's busy time grows with this process's own spinning, and never past the host's total", () => {
  const before = hostCpuMs();
  burn(300);
  const after = hostCpuMs();
  expect(after.busy).toBeGreaterThanOrEqual(before.busy);
  expect(after.total).toBeGreaterThan(before.total);
  expect(after.busy).toBeLessThanOrEqual(after.total);
  // 300 ms spun on one core, in 10 ms ticks, less what the scheduler gave others meanwhile.
  expect(after.busy - before.busy).toBeGreaterThanOrEqual(100);
});
