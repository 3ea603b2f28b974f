/**
 * Starting a VMM process of its own (a detached VM, or a clone) and waiting until its control
 * socket answers — or reporting why it died first, from what it wrote to stderr. A clone learns
 * what it is from its launch record on an inherited pipe, or (a ready VMM of the host's pool) on
 * its socket: nothing secret is in its argv or environment.
 */
import type { Writable } from "node:stream";
import { encodeLaunchRecord, LAUNCH_RECORD_FD, type LaunchRecord, launchName } from "../clone/launch-record.ts";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { SnowflockError } from "../errors.ts";
import { createPrivateFile } from "../sys/private-file.ts";
import { controlRequest } from "./control-client.ts";
import { awaitEndedClone, claimName, removeVmFiles, runDir, signalProcess, vmPaths } from "../run-dir.ts";
import { spawnDetached } from "./detached.ts";
import { handToReadyVmm } from "../pool/claim.ts";
import { CLONE_VMM_ENVIRONMENT, selfCommand } from "./self.ts";
import { scaledTimeout } from "../timeouts.ts";
import { runningTimes, SAY_RUNNING_VARIABLE, type StartTimes } from "./launch-clock.ts";

const READY_TIMEOUT_MS = scaledTimeout(15_000);

/**
 * Starts a clone's VMM under its name: once a clone of an earlier round with that name has gone,
 * the name is claimed here (the VMM does not claim it again), then spawnClone.
 */
export async function launchClone(
  record: LaunchRecord,
  announced?: Promise<StartTimes>,
): Promise<{ pid: number; times: StartTimes; fromPool: boolean }> {
  const name = launchName(record);
  await awaitEndedClone(name, record.parent);
  claimName(name);
  return spawnClone(record, announced);
}

/**
 * Starts a clone's VMM: a ready one from the host's pool (pool/claim.ts) when there is one, which
 * skips the process start, else a new process (`__clone NAME`) with the record on the pipe on its fd 3.
 */
async function spawnClone(
  record: LaunchRecord,
  announced?: Promise<StartTimes>,
): Promise<{ pid: number; times: StartTimes; fromPool: boolean }> {
  const name = launchName(record);
  const handed = await handToReadyVmm(record, runDir());
  if (handed) {
    const vmm: StartingVmm = { pid: handed.pid, stopped: handed.failure, kill: () => void signalProcess(handed.pid, "SIGKILL") };
    try {
      // A pooled clone says it runs on the claim's connection (ready-process.ts), not to its parent.
      return { ...(await awaitRunning(name, vmm, handed.running)), fromPool: true };
    } finally {
      handed.release();
    }
  }
  return { ...(await spawnVmm(name, ["__clone", name], announced, encodeLaunchRecord(record), CLONE_VMM_ENVIRONMENT)), fromPool: false };
}

/** A VMM process on its way up, however it was started. */
export interface StartingVmm {
  pid: number;
  /** Why it stopped, once it has; else undefined. */
  stopped(): string | undefined;
  /** Its timings once it said it runs (a detached VMM, on its stderr); else undefined. */
  said?(): StartTimes | undefined;
  kill(): void;
}

/**
 * Resolves once the VMM's vCPUs run, with its pid and its own timings. A clone announces that
 * itself (`announced`), since it may finish its work before anyone could ask; other VMMs are
 * asked through their control socket. `handOver`: written to the child's fd 3, then closed;
 * `environment`: added to this process's own.
 */
export async function spawnVmm(
  name: string,
  args: string[],
  announced?: Promise<StartTimes>,
  handOver?: Uint8Array,
  environment: Record<string, string> = {},
): Promise<{ pid: number; times: StartTimes }> {
  const errorPath = vmPaths(name, runDir()).startupErrors;
  const errorFd = createPrivateFile(errorPath);
  const command = [...selfCommand(), ...args];
  const { child, exitStatus } = spawnDetached(command, {
    outputFd: errorFd,
    pipeOnFd3: handOver !== undefined,
    env: { ...process.env, ...environment, SNOWFLOCK_QUIET: "1", [SAY_RUNNING_VARIABLE]: "1" },
  });
  // A child that dies before reading breaks the pipe: its exit is reported below, not the EPIPE.
  if (handOver) (child.stdio[LAUNCH_RECORD_FD] as Writable).on("error", () => {}).end(handOver);
  const lines = () => (existsSync(errorPath) ? readFileSync(errorPath, "utf8").trim().split("\n") : []);
  const said = () =>
    lines()
      .map(runningTimes)
      .find((times) => times !== undefined);
  const stopped = () => {
    const exited = exitStatus();
    if (exited === null) return undefined;
    const why = lines()
      .filter((line) => runningTimes(line) === undefined)
      .pop();
    return why || `status ${exited}`;
  };
  try {
    return await awaitRunning(name, { pid: child.pid!, stopped, said, kill: () => child.kill("SIGKILL") }, announced);
  } finally {
    rmSync(errorPath, { force: true });
  }
}

/**
 * Resolves once the VMM runs: on its announcement (a clone's, to its parent), its running line
 * (`said`), or its control socket's status; a VMM that ends without any of them failed.
 */
export async function awaitRunning(
  name: string,
  vmm: StartingVmm,
  announced?: Promise<StartTimes>,
): Promise<{ pid: number; times: StartTimes }> {
  let announcedTimes: StartTimes | undefined;
  void announced?.then(
    (times) => (announcedTimes = times),
    () => {},
  );
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (announcedTimes) return { pid: vmm.pid, times: announcedTimes };
    const why = vmm.stopped();
    // Asked after whether it stopped (then all it said is there): a VMM that said it runs and ended at once did start.
    const times = vmm.said?.();
    if (times) return { pid: vmm.pid, times };
    if (why !== undefined) {
      removeFailedVm(name);
      throw new SnowflockError("VM_STATE", `VM '${name}' stopped right after starting: ${why}`);
    }
    if (!announced && existsSync(vmPaths(name, runDir()).socket)) {
      const answer = await controlRequest(name, "status").catch(() => undefined);
      if (answer?.ok && answer.status?.state === "running")
        return { pid: vmm.pid, times: { builtMs: answer.status.timings.builtMs, runningMs: answer.status.timings.runningMs ?? 0 } };
    }
    await (announced ? Promise.race([announced, Bun.sleep(5)]) : Bun.sleep(5));
  }
  vmm.kill();
  removeFailedVm(name);
  throw new SnowflockError("VM_STATE", `VM '${name}' did not come up within ${READY_TIMEOUT_MS / 1000} s`);
}

/** A VMM that never came up leaves nothing behind: its stderr (already reported), record, socket and log. */
function removeFailedVm(name: string): void {
  rmSync(vmPaths(name, runDir()).startupErrors, { force: true });
  removeVmFiles(name, { keepLog: false }, runDir());
}
