/**
 * Talking to a host's pool keeper over its socket (`@pool.sock`, mode 0600 in the run directory):
 * one JSON line asks, one answers. The keeper is the pool daemon (`snowflock pool --clones N`) or
 * an agent, whichever holds the socket.
 */
import { existsSync } from "node:fs";
import { SnowflockError } from "../errors.ts";
import { requestLine } from "../net/line-request.ts";
import { scaledTimeout } from "../timeouts.ts";
import type { PoolSettings, PoolState } from "./keeper.ts";
import { poolPaths } from "./pool-files.ts";

export type PoolRequest = { op: "status" } | { op: "resize"; settings: Partial<PoolSettings> } | { op: "stop" };
export type PoolAnswer = { ok: true; pool: PoolState } | { ok: false; error: string };

const TIMEOUT_MS = scaledTimeout(5000);

/** Checks a request line field by field. */
export function parsePoolRequest(line: string): PoolRequest {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    throw new SnowflockError("CONTROL", "a pool request must be one JSON object");
  }
  const request = value as Record<string, unknown>;
  if (request?.op === "status" || request?.op === "stop") return { op: request.op };
  if (request?.op !== "resize" || typeof request.settings !== "object" || request.settings === null)
    throw new SnowflockError("CONTROL", "a pool request is status, resize (with settings) or stop");
  const settings: Partial<PoolSettings> = {};
  for (const key of ["size", "maxIdleBytes", "refillAfterMs", "vcpus"] as const) {
    const field = (request.settings as Record<string, unknown>)[key];
    if (field === undefined) continue;
    if (typeof field !== "number") throw new SnowflockError("CONTROL", `pool setting ${key} must be a number`);
    settings[key] = field;
  }
  return { op: "resize", settings };
}

/** The keeper's answer; undefined when no keeper holds the socket (no pool on this host). */
export async function poolRequest(dir: string, request: PoolRequest, timeoutMs = TIMEOUT_MS): Promise<PoolState | undefined> {
  const path = poolPaths(dir).keeperSocket;
  if (!existsSync(path)) return undefined;
  let line: string;
  try {
    line = await requestLine({ unix: path }, `${JSON.stringify(request)}\n`, {
      timeoutMs,
      maxAnswerBytes: 1 << 20,
      failure: (why) => new SnowflockError("CONTROL", `the pool keeper did not answer: ${why}`),
    });
  } catch (error) {
    // A socket left by a keeper that died: no pool.
    if (/ECONNREFUSED|ENOENT|failed to connect/i.test((error as Error).message)) return undefined;
    throw error;
  }
  const answer = JSON.parse(line) as PoolAnswer;
  if (!answer.ok) throw new SnowflockError("USAGE", answer.error);
  return answer.pool;
}
