/**
 * `snowflock agent`: one per host. It takes authenticated requests from the cluster's members:
 * `hello` (who it is, its room for clones, the clones it runs), `clone` (restore clones of a parent
 * on another host from its descriptor, memory on demand from the parent's server), and `relay`
 * (pass a control request to a VM on this host). It watches the clones it started: one that dies
 * without saying so is reported to its parent as killed. Anything unauthenticated is refused and
 * the connection closed.
 */
import { freemem } from "node:os";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { SnowflockError } from "../errors.ts";
import { decodeDescriptor } from "../descriptor/format.ts";
import { getpid } from "../sys/process.ts";
import { controlRequest } from "../vmm/control-client.ts";
import { type ControlRequest, parseRequest } from "../vmm/protocol.ts";
import { awaitEndedClone, checkName, claimName, ensureRunDir, processAlive, runDir } from "../vmm/run-dir.ts";
import { spawnVmm } from "../vmm/spawn.ts";
import { type AgentAnswer, type AgentRequest, MAX_MESSAGE_BYTES, ReplayGuard, signAnswer } from "./agent-protocol.ts";
import { HEURISTICS_OFF_VARIABLE } from "../heuristics/heuristics.ts";
import { CLUSTER_ENVIRONMENT_VARIABLE, type CloneOrder, type CloneOrderResult, checkCloneOrder, type ClusterEnvironment } from "./clone-order.ts";
import type { ClusterContext, RelayAnswer } from "./cluster-context.ts";
import packageJson from "../../package.json" with { type: "json" };
import { scaledTimeout } from "../timeouts.ts";

export interface AgentOptions {
  cluster: ClusterContext;
  /** Most clones this agent runs at once. */
  maxClones: number;
}

export interface AgentStats {
  requests: number;
  refused: number;
}

export interface AgentHello {
  host: string;
  pid: number;
  version: string;
  freeBytes: number;
  maxClones: number;
  clones: Array<{ name: string; parent: string; parentHost: string; pid: number }>;
}

export interface Agent {
  port: number;
  stats(): AgentStats;
  stop(): void;
}

/** Control operations a member on another host may relay to a VM here. */
const RELAYED_OPS = new Set<ControlRequest["op"]>(["status", "kill", "message", "clone-started", "clone-ended"]);
const WATCH_INTERVAL_MS = 250;
/** How long a parent waits for an agent to start its clones: restoring eager pages, memtap's first connection. */
export const CLONE_ORDER_TIMEOUT_MS = scaledTimeout(30_000);

interface RunningClone {
  name: string;
  cloneId: number;
  parent: string;
  parentHost: string;
  parentIncarnation: string;
  pid: number;
}

export function startAgent(options: AgentOptions): Agent {
  const { cluster } = options;
  const self = cluster.host;
  const guard = new ReplayGuard();
  const stats: AgentStats = { requests: 0, refused: 0 };
  const buffers = new WeakMap<object, string>();
  const clones = new Map<string, RunningClone>();
  ensureRunDir();

  const hello = (): AgentHello => ({
    host: self.name,
    pid: getpid(),
    version: packageJson.version,
    freeBytes: freemem(),
    maxClones: options.maxClones,
    clones: [...clones.values()].map(({ name, parent, parentHost, pid }) => ({ name, parent, parentHost, pid })),
  });

  const startClones = async (order: CloneOrder): Promise<CloneOrderResult> => {
    if (clones.size + order.cloneIds.length > options.maxClones) {
      throw new SnowflockError("VM_STATE", `host ${self.name} runs ${clones.size} clone(s); ${order.cloneIds.length} more would pass its limit of ${options.maxClones}`);
    }
    // A descriptor sent along is checked here, not in N clone processes; one sent by multicast is
    // fetched (and checked against its digest) by the clones themselves.
    let descriptorArgument: string;
    let descriptorPath: string | undefined;
    if (typeof order.descriptor === "string") {
      const bytes = new Uint8Array(Buffer.from(order.descriptor, "base64"));
      decodeDescriptor(bytes);
      descriptorPath = join(runDir(), `${order.parent}.clones-${randomBytes(6).toString("hex")}.sfd`);
      writeFileSync(descriptorPath, bytes, { mode: 0o600 });
      descriptorArgument = descriptorPath;
    } else descriptorArgument = `mcdist:${order.descriptor.bytes}:${order.descriptor.sha256}`;
    const environment: ClusterEnvironment = { ...cluster.environment(order.parentIncarnation), placement: order.placement };
    try {
      const outcomes = await Promise.allSettled(
        order.cloneIds.map(async (cloneId) => {
          const name = `${order.parent}.${cloneId}`;
          await awaitEndedClone(name, order.parent);
          claimName(name);
          const { pid, times } = await spawnVmm(name, ["__clone", order.parent, String(cloneId), descriptorArgument, `ondemand:${order.memory}`], undefined, {
            [CLUSTER_ENVIRONMENT_VARIABLE]: JSON.stringify(environment),
            [HEURISTICS_OFF_VARIABLE]: order.heuristicsOff.join(","),
          });
          clones.set(name, { name, cloneId, parent: order.parent, parentHost: order.parentHost, parentIncarnation: order.parentIncarnation, pid });
          return { cloneId, name, pid, builtMs: times.builtMs, runningMs: times.runningMs };
        }),
      );
      return {
        host: self.name,
        started: outcomes.flatMap((o) => (o.status === "fulfilled" ? [o.value] : [])),
        failed: outcomes.flatMap((o, i) => (o.status === "rejected" ? [{ cloneId: order.cloneIds[i]!, error: (o.reason as Error).message }] : [])),
      };
    } finally {
      if (descriptorPath) rmSync(descriptorPath, { force: true });
    }
  };

  const relay = async (body: unknown): Promise<RelayAnswer> => {
    const { vm, request } = (body ?? {}) as { vm?: unknown; request?: unknown };
    if (typeof vm !== "string") throw new SnowflockError("USAGE", "relay needs a VM name");
    checkName(vm);
    const parsed = parseRequest(JSON.stringify({ v: 1, ...(request as object) }));
    if ("error" in parsed) throw new SnowflockError("USAGE", `relay: ${parsed.error}`);
    if (!RELAYED_OPS.has(parsed.op)) throw new SnowflockError("USAGE", `relay does not pass on '${parsed.op}'`);
    try {
      return { found: true, response: await controlRequest(vm, parsed) };
    } catch (error) {
      if (error instanceof SnowflockError && error.code === "NOT_FOUND") return { found: false };
      // The VM is here but does not answer (ending, or hung): that is its answer; this host is fine.
      return { found: true, response: { ok: false, error: (error as Error).message } };
    }
  };

  const serve = async (request: AgentRequest): Promise<Omit<AgentAnswer, "mac">> => {
    try {
      switch (request.op) {
        case "hello":
          return { ok: true, nonce: request.nonce, body: hello() };
        case "clone":
          return { ok: true, nonce: request.nonce, body: await startClones(checkCloneOrder(request.body)) };
        case "relay":
          return { ok: true, nonce: request.nonce, body: await relay(request.body) };
        default:
          return { ok: false, nonce: request.nonce, error: `unknown operation ${JSON.stringify(request.op)}` };
      }
    } catch (error) {
      return { ok: false, nonce: request.nonce, error: error instanceof SnowflockError ? error.render() : (error as Error).message };
    }
  };

  // A clone that vanished without reporting its end (killed, crashed VMM) is reported as killed;
  // its parent ignores this if the clone had already said how it ended.
  const watcher = setInterval(() => {
    for (const clone of clones.values()) {
      if (processAlive(clone.pid)) continue;
      clones.delete(clone.name);
      const parentHost = cluster.inventory.hosts.find((h) => h.name === clone.parentHost);
      if (!parentHost) continue;
      // The incarnation keeps a late report from reaching a newer VM that took the parent's name.
      const request = { op: "clone-ended", cloneId: clone.cloneId, status: -9, incarnation: clone.parentIncarnation };
      void (parentHost.name === self.name ? controlRequest(clone.parent, request as never) : cluster.agentCall(parentHost, "relay", { vm: clone.parent, request })).catch(() => undefined);
    }
  }, WATCH_INTERVAL_MS);

  const server = Bun.listen({
    hostname: self.address,
    port: self.agentPort,
    socket: {
      open(socket) {
        buffers.set(socket, "");
      },
      data(socket, chunk) {
        const text = chunk.toString();
        let buffer = (buffers.get(socket) ?? "") + text;
        if (buffer.length > MAX_MESSAGE_BYTES) {
          stats.refused++;
          socket.end(`${JSON.stringify({ ok: false, error: "request too large" })}\n`);
          return;
        }
        // Only a chunk with a newline can complete a request: a large one is not rescanned per chunk.
        let newline = text.includes("\n") ? buffer.indexOf("\n") : -1;
        for (; newline >= 0; newline = buffer.indexOf("\n")) {
          const line = buffer.slice(0, newline);
          buffer = buffer.slice(newline + 1);
          let value: unknown;
          try {
            value = JSON.parse(line);
          } catch {
            value = undefined;
          }
          const refusal = guard.check(cluster.inventory.secret, self.name, value);
          if (refusal) {
            // Nothing is signed for an unauthenticated peer: it learns only that it was refused.
            stats.refused++;
            socket.end(`${JSON.stringify({ ok: false, error: `unauthenticated: ${refusal}` })}\n`);
            return;
          }
          stats.requests++;
          void serve(value as AgentRequest).then((answer) => socket.write(`${JSON.stringify(signAnswer(cluster.inventory.secret, answer))}\n`));
        }
        buffers.set(socket, buffer);
      },
    },
  });
  return {
    port: server.port,
    stats: () => ({ ...stats }),
    stop: () => {
      clearInterval(watcher);
      server.stop(true);
    },
  };
}
