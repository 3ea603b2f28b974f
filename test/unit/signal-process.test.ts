/** signalProcess: a process that has gone already (between a check and the signal) is no error. */
import { expect, test } from "bun:test";
import { processAlive, signalProcess } from "../../src/run-dir.ts";

test("signals a live process, and takes one that has ended as gone, not as an error (ESRCH)", async () => {
  const child = Bun.spawn(["sleep", "30"]);
  expect(processAlive(child.pid)).toBe(true);
  expect(signalProcess(child.pid, "SIGKILL")).toBe(true);
  await child.exited;
  expect(child.signalCode).toBe("SIGKILL");
  expect(signalProcess(child.pid, "SIGKILL")).toBe(false);
  expect(() => process.kill(child.pid, "SIGKILL")).toThrow(); // what stopVms used to call
});
