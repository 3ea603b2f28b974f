/** Setting a host's pool from the CLI: resizing the keeper there is, or starting the pool daemon (`__pool`) first. */
import { existsSync, openSync, readFileSync } from "node:fs";
import { SnowflockError } from "../errors.ts";
import { scaledTimeout } from "../timeouts.ts";
import { spawnDetached } from "../vmm/detached.ts";
import { selfCommand } from "../vmm/self.ts";
import type { PoolSettings, PoolState } from "./keeper.ts";
import { poolRequest } from "./keeper-protocol.ts";
import { poolPaths } from "./pool-files.ts";

const START_TIMEOUT_MS = scaledTimeout(15_000);
const FILL_TIMEOUT_MS = scaledTimeout(120_000);

function lastLogLine(dir: string): string {
  const path = poolPaths(dir).log;
  return existsSync(path) ? (readFileSync(path, "utf8").trim().split("\n").pop() ?? "") : "";
}

async function startDaemon(dir: string): Promise<void> {
  const { exitStatus } = spawnDetached([...selfCommand(), "__pool"], {
    outputFd: openSync(poolPaths(dir).log, "a", 0o600),
    env: { ...process.env, SNOWFLOCK_RUN_DIR: dir, SNOWFLOCK_QUIET: "1" },
  });
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (await poolRequest(dir, { op: "status" })) return;
    const status = exitStatus();
    if (status !== null)
      throw new SnowflockError("VM_STATE", `the pool daemon stopped right after starting: ${lastLogLine(dir) || `status ${status}`}`);
    await Bun.sleep(10);
  }
  throw new SnowflockError("VM_STATE", `the pool daemon did not answer within ${START_TIMEOUT_MS / 1000} s`, `see ${poolPaths(dir).log}`);
}

/**
 * Gives the host's pool these settings: size 0 ends it (undefined then); otherwise the daemon is
 * started if no keeper runs.
 */
export async function setPool(dir: string, settings: Partial<PoolSettings>): Promise<PoolState | undefined> {
  if (settings.size === 0) {
    await poolRequest(dir, { op: "stop" });
    return undefined;
  }
  const state = await poolRequest(dir, { op: "resize", settings });
  if (state) return state;
  await startDaemon(dir);
  return poolRequest(dir, { op: "resize", settings });
}

/** Waits until nothing in the pool is starting any more: it is full, or held back by its memory bound or a failure. */
export async function awaitPoolSettled(dir: string, progress?: (state: PoolState) => void): Promise<PoolState | undefined> {
  const deadline = Date.now() + FILL_TIMEOUT_MS;
  for (;;) {
    const state = await poolRequest(dir, { op: "status" });
    if (!state) return undefined;
    progress?.(state);
    if (state.settled || (state.starting === 0 && state.lastError !== undefined) || Date.now() > deadline) return state;
    await Bun.sleep(50);
  }
}
