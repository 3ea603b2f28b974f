/**
 * The agent's own socket in this host's run directory (agent.sock, the owner's alone): operator
 * commands that need the process that stays. A Xen fork whose clones take memory on demand runs
 * in the agent, which keeps their pagers and memory server for as long as they live; so does
 * `snowflock pool`, whose on-demand shells keep their pagers there until a fork takes them.
 */
import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { DomainOperations, PagedClone, PoolResult } from "../backend/backend.ts";
import { forkDomain } from "../clone/domain-fork.ts";
import type { ForkResult } from "../clone/fork-result.ts";
import { SnowflockError } from "../errors.ts";
import type { ListenerLimits } from "../net/bounded-listener.ts";
import { requestLine } from "../net/line-request.ts";
import { serveLines } from "../net/line-server.ts";
import { scaledTimeout } from "../timeouts.ts";

const VERSION = 1;

export interface AgentForkRequest {
  v: number;
  op: "fork";
  parent: string;
  clones: number;
  memory: "eager" | "ondemand";
}

/** Keep `clones` shells ready for the parent's forks (0: none). */
export interface AgentPoolRequest extends Omit<AgentForkRequest, "op"> {
  op: "pool";
}

type AgentSocketRequest = AgentForkRequest | AgentPoolRequest | { v: number; op: "paged-clones" };

type Answer =
  | { ok: true; fork: ForkResult }
  | { ok: true; pool: PoolResult }
  | { ok: true; clones: PagedClone[] }
  | { ok: false; error: string };

export const agentSocketPath = (runDirectory: string) => join(runDirectory, "agent.sock");

function limits(): ListenerLimits {
  return {
    maxConnections: 16,
    preAuthBytes: 0,
    authDeadlineMs: scaledTimeout(30_000),
    messageBytes: 4096,
    idleMs: scaledTimeout(30_000),
    maxOutboundBytes: 1024 * 1024,
  };
}

function parse(line: string, maxClones: number): AgentSocketRequest {
  let request: Partial<AgentForkRequest | AgentPoolRequest>;
  try {
    request = JSON.parse(line) as Partial<AgentForkRequest | AgentPoolRequest>;
  } catch {
    throw new Error("the request is not JSON");
  }
  if (request.v !== VERSION) throw new Error(`protocol version ${String(request.v)}; this agent speaks ${VERSION}`);
  if ((request.op as string) === "paged-clones") return { v: VERSION, op: "paged-clones" };
  if (request.op !== "fork" && request.op !== "pool") throw new Error(`unknown operation ${JSON.stringify(request.op)}`);
  if (typeof request.parent !== "string" || request.parent.length === 0 || request.parent.length > 128) throw new Error("bad parent");
  // A pool of 0 ends the ready shells; a fork makes at least one clone.
  const least = request.op === "pool" ? 0 : 1;
  if (!Number.isInteger(request.clones) || request.clones! < least || request.clones! > maxClones)
    throw new Error(`bad clone count (${least} to ${maxClones})`);
  if (request.memory !== "eager" && request.memory !== "ondemand") throw new Error("bad memory mode");
  return request as AgentForkRequest | AgentPoolRequest;
}

/** Serves forks of domains for the operator's `snowflock fork` (one at a time per request). */
export function serveAgentSocket(domains: DomainOperations, runDirectory: string, log: (line: string) => void): { close(): void } {
  // One agent per host: a socket left by an agent that died is taken over.
  rmSync(agentSocketPath(runDirectory), { force: true });
  return serveLines(agentSocketPath(runDirectory), limits(), async (line): Promise<Answer> => {
    const request = parse(line, domains.maxClones);
    if (request.op === "paged-clones") return { ok: true, clones: domains.pagedClones() };
    domains.checkMemory(request.memory);
    if (request.op === "pool") {
      log(`pool ${request.parent} --clones ${request.clones} --memory ${request.memory} (snowflock pool)`);
      const pool = await domains.pool(request.parent, request.clones, { memory: request.memory, workDirectory: runDirectory });
      log(
        `${pool.parent}: ${pool.shells.length} ${pool.memory} shell(s) ready (${pool.built} built in ${(pool.shellsMs / 1000).toFixed(1)} s` +
          `${pool.pageOutMs > 0 ? `, paged out in ${(pool.pageOutMs / 1000).toFixed(1)} s` : ""}; ${pool.ended} ended)`,
      );
      return { ok: true, pool };
    }
    log(`fork ${request.parent} --clones ${request.clones} --memory ${request.memory} (snowflock fork)`);
    const fork = await forkDomain(domains, request.parent, request.clones, { workDirectory: runDirectory, memory: request.memory });
    return { ok: true, fork };
  });
}

/** The agent's socket, or an error saying no agent runs here (`why`: what needs the agent). */
function runningAgentSocket(runDirectory: string, why: string): string {
  const path = agentSocketPath(runDirectory);
  if (!existsSync(path))
    throw new SnowflockError(
      "NOT_FOUND",
      `no snowflock agent runs on this host (${path} is missing)`,
      `start \`snowflock agent --backend xen\` in this dom0: ${why}`,
    );
  return path;
}

/** `snowflock fork` of a domain through this host's agent. */
export async function forkThroughAgent(
  runDirectory: string,
  parent: string,
  clones: number,
  memory: AgentForkRequest["memory"],
): Promise<ForkResult> {
  const path = runningAgentSocket(runDirectory, "clones with memory on demand live on in it");
  const request: AgentForkRequest = { v: VERSION, op: "fork", parent, clones, memory };
  const failure = (why: string) =>
    new SnowflockError("CONTROL", `the agent did not answer the fork: ${why}`, "`snowflock agent` may have stopped");
  const answer = await askAgent(path, request, scaledTimeout(900_000), failure);
  if (!answer.ok) throw new SnowflockError("VM_STATE", `the agent could not fork ${parent}: ${answer.error}`);
  if (!("fork" in answer)) throw failure("its answer has no fork");
  return answer.fork;
}

/** `snowflock pool` of a domain through this host's agent (on-demand shells keep their pagers there). */
export async function poolThroughAgent(
  runDirectory: string,
  parent: string,
  clones: number,
  memory: AgentPoolRequest["memory"],
): Promise<PoolResult> {
  const path = runningAgentSocket(runDirectory, "on-demand shells keep their pagers in it");
  const failure = (why: string) =>
    new SnowflockError("CONTROL", `the agent did not answer the pool request: ${why}`, "`snowflock agent` may have stopped");
  const answer = await askAgent(path, { v: VERSION, op: "pool", parent, clones, memory }, scaledTimeout(1_800_000), failure);
  if (!answer.ok) throw new SnowflockError("VM_STATE", `the agent could not keep shells ready for ${parent}: ${answer.error}`);
  if (!("pool" in answer)) throw failure("its answer has no pool");
  return answer.pool;
}

/**
 * The clones the agent's pagers serve, with their counters; or why none can be: no agent socket
 * here, or an agent that does not answer (killed: its socket file stays behind).
 */
export async function pagedClonesOfAgent(runDirectory: string): Promise<{ clones: PagedClone[] } | { noAgent: string }> {
  const path = agentSocketPath(runDirectory);
  if (!existsSync(path)) return { noAgent: "no snowflock agent runs here" };
  const failure = (why: string) => new SnowflockError("CONTROL", `the agent did not answer: ${why}`, "`snowflock agent` may have stopped");
  try {
    const answer = await askAgent(path, { v: VERSION, op: "paged-clones" }, scaledTimeout(10_000), failure);
    if (!answer.ok || !("clones" in answer))
      return { noAgent: `the agent did not list its clones: ${answer.ok ? "no clones in its answer" : answer.error}` };
    return { clones: answer.clones };
  } catch (error) {
    return { noAgent: error instanceof SnowflockError ? error.message : `the agent did not answer: ${(error as Error).message}` };
  }
}

/** One request line to the agent's socket, one JSON answer line back; `failure` says what went wrong. */
async function askAgent(
  path: string,
  request: AgentSocketRequest,
  timeoutMs: number,
  failure: (why: string) => SnowflockError,
): Promise<Answer> {
  const line = await requestLine({ unix: path }, `${JSON.stringify(request)}\n`, { timeoutMs, maxAnswerBytes: 16 * 1024 * 1024, failure });
  try {
    return JSON.parse(line) as Answer;
  } catch {
    throw failure("the answer was not JSON");
  }
}
