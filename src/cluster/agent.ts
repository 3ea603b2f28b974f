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
import { checkName, ensureRunDir, processAlive, pruneEndedLogs, runDir } from "../run-dir.ts";
import { launchClone } from "../vmm/spawn.ts";
import {
  type AgentAnswer,
  type AgentRequest,
  type AgentRequestHeader,
  bodyMatches,
  MAX_BODY_BYTES,
  MAX_HEADER_BYTES,
  NONCE_KEEP_MS,
  ReplayGuard,
  signAnswer,
} from "./agent-protocol.ts";
import { SeenNonces } from "./seen-nonces.ts";
import { type ListenerLimits, listenBounded } from "../net/bounded-listener.ts";
import { lineLength } from "../net/byte-queue.ts";
import type { ClusterEnvironment } from "../clone/cluster-environment.ts";
import { type CloneOrder, type CloneOrderResult, checkCloneOrder } from "./clone-order.ts";
import type { LaunchRecord } from "../clone/launch-record.ts";
import { describePageServer, formatPageServer, parsePageServer } from "../memory/page-server-address.ts";
import { type ClusterContext, type RelayAnswer, withOwnEnd } from "./cluster-context.ts";
import packageJson from "../../package.json" with { type: "json" };
import { scaledTimeout } from "../timeouts.ts";
import type { BackendName } from "../backend/names.ts";
import type { DomainOperations } from "../backend/backend.ts";
import { CloneStatus } from "../guest/hypercalls.ts";
import { checkFamilyEvent, type FamilyEvent, type FamilyEventAnswer } from "./family-event.ts";

export interface AgentOptions {
  cluster: ClusterContext;
  /** The backend this host runs VMs with (hello says it). */
  backend: BackendName;
  /** Most clones this agent runs at once. */
  maxClones: number;
  /**
   * Where the hypervisor runs the VMs (a Xen dom0): clone orders start domains through these, from
   * the descriptor the order carries and memory copied from the parent's server.
   */
  domains?: DomainOperations;
  /** In a dom0: what the domUs' families on other hosts tell this one (src/cluster/domain-guests.ts serves them). */
  familyEvents?: (event: FamilyEvent) => Promise<FamilyEventAnswer>;
  /** A line on what the agent does for others (clone orders); none by default. */
  log?: (line: string) => void;
}

/**
 * What the agent's port lets a peer cost it (net/bounded-listener.ts). Before it authenticates, a
 * peer may send one header line (MAX_HEADER_BYTES) within 10 s; after, a body of up to
 * MAX_BODY_BYTES. Legitimate clients hold a connection for one request, so 128 at once is plenty.
 */
function agentListenerLimits(): ListenerLimits {
  return {
    maxConnections: 128,
    preAuthBytes: MAX_HEADER_BYTES,
    authDeadlineMs: scaledTimeout(10_000),
    messageBytes: MAX_BODY_BYTES,
    idleMs: scaledTimeout(30_000),
    maxOutboundBytes: 4 * 1024 * 1024,
  };
}

export interface AgentStats {
  requests: number;
  refused: number;
}

export interface AgentHello {
  host: string;
  backend: BackendName;
  pid: number;
  version: string;
  freeBytes: number;
  maxClones: number;
  /** Requests it served, and those it refused (unauthenticated, forged, replayed) since it started. */
  requests: number;
  refused: number;
  /** Clone orders it is carrying out (a Xen host fetching a parent's memory): how long since each last moved, and its last word. */
  orders: OrderInFlight[];
  /** The clones it started and that still run: a VMM process each (pid), or a domain (domid, and its state as `ls` says it). */
  clones: Array<{
    name: string;
    parent: string;
    parentHost: string;
    pid?: number;
    domid?: number;
    state?: string;
    /** A domain with memory on demand: its faults and the pages its pager fetched so far. */
    faults?: number;
    pagesFetched?: number;
  }>;
}

export interface OrderInFlight {
  parent: string;
  parentHost: string;
  cloneIds: number[];
  /** Since the order came, and since its last progress line. */
  ageMs: number;
  quietMs: number;
  progress?: string;
}

export interface Agent {
  port: number;
  stats(): AgentStats;
  stop(): void;
}

/** Control operations a member on another host may relay to a VM here. */
const RELAYED_OPS = new Set<ControlRequest["op"]>(["status", "kill", "message", "clone-started", "clone-ended"]);
const WATCH_INTERVAL_MS = 250;
/** How often the domains started for clone orders are looked for (a listing of every domain). */
const DOMAIN_WATCH_INTERVAL_MS = 1000;
/** How long a parent waits for an agent to start its clones: restoring eager pages, memtap's first connection. */
export const CLONE_ORDER_TIMEOUT_MS = scaledTimeout(30_000);

/** A domain this agent started for a clone order (a Xen dom0). */
interface DomainClone {
  name: string;
  parent: string;
  parentHost: string;
  domid: number;
  /** The parent's domid on its host, and this clone's ID: what the parent's family knows it by. */
  parentDomain: number;
  cloneId: number;
  state?: string;
}

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
  const stats: AgentStats = { requests: 0, refused: 0 };
  const clones = new Map<string, RunningClone>();
  ensureRunDir();
  const seenNonces = new SeenNonces(NONCE_KEEP_MS, join(runDir(), `agent-${self.name}.nonces`));
  const guard = new ReplayGuard(seenNonces);

  /** Clone orders being carried out, for hello: whoever waits for one can tell a slow order from a stuck one. */
  const orders = new Set<{ order: CloneOrder; since: number; movedAt: number; progress?: string }>();
  /** Domains started for clone orders (a Xen dom0), by name; those no longer listed have ended. */
  const domainClones = new Map<string, DomainClone>();
  const pruneDomainClones = async () => {
    if (!options.domains || domainClones.size === 0) return;
    const listed = new Map((await options.domains.list()).map((d) => [`${d.name}#${d.id}`, d.state]));
    for (const [name, clone] of domainClones) {
      const state = listed.get(`${name}#${clone.domid}`);
      if (state !== undefined) {
        clone.state = state;
        continue;
      }
      domainClones.delete(name);
      // Its parent's host hears of it (a clone that said how it ended with sf exit: that report came first and stands).
      const parentHost = cluster.inventory.hosts.find((h) => h.name === clone.parentHost);
      if (!parentHost || parentHost.name === self.name) continue;
      const event: FamilyEvent = { event: "ended", parentDomain: clone.parentDomain, cloneId: clone.cloneId, status: CloneStatus.KILLED };
      void cluster.agentCall(parentHost, "family", event).catch(() => undefined);
    }
  };

  const hello = async (): Promise<AgentHello> => {
    await pruneDomainClones();
    // Clones with memory on demand: what their pagers did so far.
    const paged = new Map((options.domains?.pagedClones() ?? []).map((c) => [c.domid, c.stats]));
    return {
      host: self.name,
      backend: options.backend,
      pid: getpid(),
      version: packageJson.version,
      freeBytes: options.domains ? options.domains.freeBytes() : freemem(),
      maxClones: options.maxClones,
      ...stats,
      orders: [...orders].map(({ order, since, movedAt, progress }) => ({
        parent: order.parent,
        parentHost: order.parentHost,
        cloneIds: order.cloneIds,
        ageMs: Math.round(performance.now() - since),
        quietMs: Math.round(performance.now() - movedAt),
        ...(progress !== undefined && { progress }),
      })),
      clones: [
        ...[...clones.values()].map(({ name, parent, parentHost, pid }) => ({ name, parent, parentHost, pid })),
        ...[...domainClones.values()].map(({ name, parent, parentHost, domid, state }) => {
          const memory = paged.get(domid);
          return { name, parent, parentHost, domid, state, ...(memory && { faults: memory.faults, pagesFetched: memory.pagesFetched }) };
        }),
      ],
    };
  };

  /** Clones of orders still starting: two orders at once must not both find the same room. */
  let starting = 0;
  /** Holds room for `more` clones; the returned release gives back `count` of it (all that is left by default) as they run. */
  const reserveRoom = (more: number): ((count?: number) => void) => {
    const running = clones.size + domainClones.size;
    if (running + starting + more > options.maxClones) {
      throw new SnowflockError(
        "VM_STATE",
        `host ${self.name} runs ${running} clone(s)${starting > 0 ? ` and starts ${starting}` : ""}; ` +
          `${more} more would pass its limit of ${options.maxClones}`,
      );
    }
    starting += more;
    let held = more;
    return (count = held) => {
      const released = Math.min(count, held);
      starting -= released;
      held -= released;
    };
  };

  /** A clone order on a host whose hypervisor runs the VMs: domains started here, eager memory from the parent's server. */
  const startDomainClones = async (domains: DomainOperations, order: CloneOrder): Promise<CloneOrderResult> => {
    await pruneDomainClones();
    if (typeof order.descriptor !== "string")
      throw new SnowflockError("USAGE", `host ${self.name} (${options.backend}) takes a clone order's descriptor inside the order`);
    const { descriptor } = decodeDescriptor(new Uint8Array(Buffer.from(order.descriptor, "base64")));
    if (descriptor.meta.backend !== options.backend)
      throw new SnowflockError("USAGE", `host ${self.name} runs ${options.backend} domains, not ${descriptor.meta.backend} machines`);
    if (order.parentDomain === undefined)
      throw new SnowflockError("USAGE", `a clone order for ${options.backend} domains names the parent's domid`);
    const parentDomain = order.parentDomain;
    const started = performance.now();
    const say = options.log ?? (() => {});
    const names = order.cloneIds.map((id) => `${order.parent}.${id}`).join(", ");
    const releaseRoom = reserveRoom(order.cloneIds.length);
    const inFlight = { order, since: started, movedAt: started, progress: undefined as string | undefined };
    orders.add(inFlight);
    const progress = (line: string) => {
      inFlight.movedAt = performance.now();
      inFlight.progress = line;
      say(line);
    };
    const memory = order.domainMemory ?? "eager";
    say(`clone order from ${order.parentHost}: ${names} (memory ${memory} from ${describePageServer(parsePageServer(order.memory))})`);
    try {
      const domainsStarted = await domains.startClones({
        parentName: order.parent,
        parentDomain,
        parentHost: order.parentHost,
        replySeq: order.replySeq,
        snapshot: descriptor,
        // An mcdist server is reached through this host's end of the cluster's network.
        server: formatPageServer(withOwnEnd(parsePageServer(order.memory), cluster)),
        cloneIds: order.cloneIds,
        workDirectory: runDir(),
        memory,
        progress,
      });
      const ms = performance.now() - started;
      say(`${names} running (${(ms / 1000).toFixed(1)} s)`);
      for (const d of domainsStarted)
        domainClones.set(d.name, {
          name: d.name,
          parent: order.parent,
          parentHost: order.parentHost,
          domid: d.domid,
          parentDomain,
          cloneId: d.cloneId,
        });
      return {
        host: self.name,
        started: domainsStarted.map((d) => ({ cloneId: d.cloneId, name: d.name, domid: d.domid, mac: d.mac, builtMs: ms, runningMs: ms })),
        failed: [],
      };
    } catch (error) {
      const message = error instanceof SnowflockError ? error.render() : (error as Error).message;
      say(`${names} failed: ${message}`);
      return { host: self.name, started: [], failed: order.cloneIds.map((cloneId) => ({ cloneId, error: message })) };
    } finally {
      releaseRoom();
      orders.delete(inFlight);
    }
  };

  const startClones = async (order: CloneOrder): Promise<CloneOrderResult> => {
    if (options.domains) return startDomainClones(options.domains, order);
    const releaseRoom = reserveRoom(order.cloneIds.length);
    let descriptorPath: string | undefined;
    try {
      // A descriptor sent along is checked here, not in N clone processes; one sent by multicast is
      // fetched (and checked against its digest) by the clones themselves.
      let descriptor: LaunchRecord["descriptor"];
      if (typeof order.descriptor === "string") {
        const bytes = new Uint8Array(Buffer.from(order.descriptor, "base64"));
        decodeDescriptor(bytes);
        descriptorPath = join(runDir(), `${order.parent}.clones-${randomBytes(6).toString("hex")}.sfd`);
        writeFileSync(descriptorPath, bytes, { mode: 0o600 });
        descriptor = { kind: "file", path: descriptorPath };
      } else descriptor = { kind: "mcdist", ...order.descriptor };
      const environment: ClusterEnvironment = { ...cluster.environment(order.parentIncarnation), placement: order.placement };
      const memory: LaunchRecord["memory"] = { kind: "ondemand", server: parsePageServer(order.memory) };
      const outcomes = await Promise.allSettled(
        order.cloneIds.map(async (cloneId) => {
          const name = `${order.parent}.${cloneId}`;
          const { pid, times, fromPool } = await launchClone({
            parent: order.parent,
            cloneId,
            descriptor,
            memory,
            cluster: environment,
            heuristicsOff: order.heuristicsOff,
          });
          clones.set(name, {
            name,
            cloneId,
            parent: order.parent,
            parentHost: order.parentHost,
            parentIncarnation: order.parentIncarnation,
            pid,
          });
          releaseRoom(1);
          return { cloneId, name, pid, builtMs: times.builtMs, runningMs: times.runningMs, fromPool };
        }),
      );
      pruneEndedLogs();
      return {
        host: self.name,
        started: outcomes.flatMap((o) => (o.status === "fulfilled" ? [o.value] : [])),
        failed: outcomes.flatMap((o, i) =>
          o.status === "rejected" ? [{ cloneId: order.cloneIds[i]!, error: (o.reason as Error).message }] : [],
        ),
      };
    } finally {
      releaseRoom();
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
          return { ok: true, nonce: request.nonce, body: await hello() };
        case "clone":
          return { ok: true, nonce: request.nonce, body: await startClones(checkCloneOrder(request.body)) };
        case "relay":
          return { ok: true, nonce: request.nonce, body: await relay(request.body) };
        case "family":
          if (!options.familyEvents) throw new SnowflockError("USAGE", `host ${self.name} runs no domUs' families`);
          return { ok: true, nonce: request.nonce, body: await options.familyEvents(checkFamilyEvent(request.body)) };
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
      void (
        parentHost.name === self.name
          ? controlRequest(clone.parent, request as never)
          : cluster.agentCall(parentHost, "relay", { vm: clone.parent, request })
      ).catch(() => undefined);
    }
  }, WATCH_INTERVAL_MS);
  const domainWatcher = options.domains
    ? setInterval(() => void pruneDomainClones().catch(() => undefined), DOMAIN_WATCH_INTERVAL_MS)
    : undefined;

  /** Nothing is signed for an unauthenticated peer: it learns only that it was refused. */
  const refusal = (reason: string) => {
    stats.refused++;
    // A peer that keeps trying must not fill the log: the first few, then every thousandth.
    if (stats.refused <= 10 || stats.refused % 1000 === 0) options.log?.(`refused a request (${stats.refused} so far): ${reason}`);
    return `${JSON.stringify({ ok: false, error: reason })}\n`;
  };

  // A connection alternates: a header line (authenticated on its own), then the body it announced.
  const server = listenBounded<{ header?: AgentRequestHeader }>({ hostname: self.address, port: self.agentPort }, agentListenerLimits(), {
    open: () => ({}),
    messageLength: (connection, pending) => connection.state.header?.bodyBytes ?? lineLength(pending),
    message(connection, bytes) {
      const header = connection.state.header;
      if (header === undefined) {
        const value = parseJson(bytes);
        const problem = guard.check(cluster.inventory.secret, self.name, value);
        if (problem) return connection.close(refusal(`unauthenticated: ${problem}`));
        connection.authenticate();
        connection.state.header = value as AgentRequestHeader;
        return;
      }
      connection.state.header = undefined;
      if (!bodyMatches(header, bytes))
        return connection.close(refusal("unauthenticated: the body is not the one its header was signed for"));
      stats.requests++;
      return serve({ op: header.op, nonce: header.nonce, body: parseJson(bytes) }).then((answer) =>
        connection.write(`${JSON.stringify(signAnswer(cluster.inventory.secret, answer))}\n`),
      );
    },
    refusal,
  });
  return {
    port: server.port,
    stats: () => ({ ...stats }),
    stop: () => {
      clearInterval(watcher);
      clearInterval(domainWatcher);
      server.stop();
      seenNonces.close();
    },
  };
}

function parseJson(bytes: Buffer): unknown {
  try {
    return JSON.parse(bytes.toString());
  } catch {
    return undefined;
  }
}
