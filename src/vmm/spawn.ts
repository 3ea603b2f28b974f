/**
 * Starting a VMM process of its own (a detached VM, or a clone) and waiting until its control
 * socket answers — or reporting why it died first, from what it wrote to stderr.
 */
import { spawn } from "node:child_process";
import { closeSync, existsSync, openSync, readFileSync, rmSync } from "node:fs";
import { SnowflockError } from "../errors.ts";
import { controlRequest } from "./control-client.ts";
import { runDir, vmPaths } from "./run-dir.ts";
import { selfCommand } from "./self.ts";
import { scaledTimeout } from "../timeouts.ts";

const READY_TIMEOUT_MS = scaledTimeout(15_000);

export interface StartTimes {
  builtMs: number;
  runningMs: number;
}

/**
 * Resolves once the VMM's vCPUs run, with its pid and its own timings. A clone announces that
 * itself (`announced`), since it may finish its work before anyone could ask; other VMMs are
 * asked through their control socket.
 */
export async function spawnVmm(name: string, args: string[], announced?: Promise<StartTimes>, env: Record<string, string> = {}): Promise<{ pid: number; times: StartTimes }> {
  const errorPath = vmPaths(name, runDir()).startupErrors;
  const errorFd = openSync(errorPath, "w", 0o600);
  const command = [...selfCommand(), ...args];
  const child = spawn(command[0]!, command.slice(1), { detached: true, stdio: ["ignore", "ignore", errorFd], env: { ...process.env, ...env, SNOWFLOCK_QUIET: "1" } });
  closeSync(errorFd);
  let exited: number | null = null;
  child.on("exit", (code) => (exited = code ?? 1));
  child.unref();

  let announcedTimes: StartTimes | undefined;
  void announced?.then((times) => (announcedTimes = times));
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (announcedTimes) {
      rmSync(errorPath, { force: true });
      return { pid: child.pid!, times: announcedTimes };
    }
    if (exited !== null) {
      const why = existsSync(errorPath) ? readFileSync(errorPath, "utf8").trim().split("\n").pop() : "";
      throw new SnowflockError("VM_STATE", `VM '${name}' stopped right after starting${why ? `: ${why}` : ` (status ${exited})`}`, `see \`snowflock logs ${name}\``);
    }
    if (!announced && existsSync(vmPaths(name, runDir()).socket)) {
      const answer = await controlRequest(name, "status").catch(() => undefined);
      if (answer?.ok && answer.status?.state === "running") {
        rmSync(errorPath, { force: true });
        return { pid: child.pid!, times: { builtMs: answer.status.timings.builtMs, runningMs: answer.status.timings.runningMs ?? 0 } };
      }
    }
    await Bun.sleep(5);
  }
  child.kill("SIGKILL");
  throw new SnowflockError("VM_STATE", `VM '${name}' did not come up within ${READY_TIMEOUT_MS / 1000} s`, `see \`snowflock logs ${name}\``);
}
