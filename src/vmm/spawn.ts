/**
 * Starting a VMM process of its own (a detached VM, or a clone) and waiting until its control
 * socket answers — or reporting why it died first, from what it wrote to stderr.
 */
import { spawn } from "node:child_process";
import { closeSync, existsSync, openSync, readFileSync } from "node:fs";
import { SnowflockError } from "../errors.ts";
import { controlRequest } from "./control-client.ts";
import type { VmStatus } from "./protocol.ts";
import { vmPaths } from "./run-dir.ts";
import { selfCommand } from "./self.ts";

const READY_TIMEOUT_MS = 15_000;

/** Resolves once the VMM's vCPUs run, with its pid and its own timings. */
export async function spawnVmm(name: string, args: string[]): Promise<{ pid: number; status: VmStatus }> {
  const errorPath = vmPaths(name).startupErrors;
  const errorFd = openSync(errorPath, "w", 0o600);
  const command = [...selfCommand(), ...args];
  const child = spawn(command[0]!, command.slice(1), { detached: true, stdio: ["ignore", "ignore", errorFd], env: { ...process.env, SNOWFLOCK_QUIET: "1" } });
  closeSync(errorFd);
  let exited: number | null = null;
  child.on("exit", (code) => (exited = code ?? 1));
  child.unref();

  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (exited !== null) {
      const why = existsSync(errorPath) ? readFileSync(errorPath, "utf8").trim().split("\n").pop() : "";
      throw new SnowflockError("VM_STATE", `VM '${name}' stopped right after starting${why ? `: ${why}` : ` (status ${exited})`}`, `see \`snowflock logs ${name}\``);
    }
    if (existsSync(vmPaths(name).socket)) {
      const answer = await controlRequest(name, "status").catch(() => undefined);
      if (answer?.ok && answer.status?.state === "running") return { pid: child.pid!, status: answer.status };
    }
    await Bun.sleep(5);
  }
  child.kill("SIGKILL");
  throw new SnowflockError("VM_STATE", `VM '${name}' did not come up within ${READY_TIMEOUT_MS / 1000} s`, `see \`snowflock logs ${name}\``);
}
