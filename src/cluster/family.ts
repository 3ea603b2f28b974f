/**
 * A VM's family, as its own VMM sees it: the tickets it was granted, the clones it made, its
 * inbox, and — for a clone — its parent. It carries out the Impromptu Cluster API (guest/ABI.md)
 * in values: guest-calls.ts turns the guest's hypercalls (and their guest pointers) into these
 * calls. A misuse fails that call with an error code.
 */
import { freemem } from "node:os";
import type { Machine } from "../backend/backend.ts";
import type { CloneReport, ForkResult, MemoryPath, RemoteTransport } from "../clone/fork-result.ts";
import { captureClones, type CloneSource, releaseClones, remoteMemory, spawnClones } from "../clone/local-fork.ts";
import type { CloneMemoryStats } from "../memory/clone-memory-stats.ts";
import type { MemoryServer } from "../memory/memory-server.ts";
import type { McdistServer } from "../mcdist/server.ts";
import type { Heuristic } from "../heuristics/heuristics.ts";
import { MAX_MULTICAST_DESCRIPTOR } from "../mcdist/messages.ts";
import { SnowflockError } from "../errors.ts";
import type { CloneCall } from "../descriptor/format.ts";
import { CloneStatus, GuestError } from "../guest/hypercalls.ts";
import { type GuestLimits, guestLimits } from "../guest/limits.ts";
import { readRecord, vmAlive } from "../run-dir.ts";
import type { StartTimes } from "../vmm/launch-clock.ts";
import type { ControlResponse } from "../vmm/protocol.ts";
import { CLONE_ORDER_TIMEOUT_MS } from "./agent.ts";
import type { CloneOrder, CloneOrderResult } from "./clone-order.ts";
import type { FamilyCalls, GuestErrorCode } from "./guest-calls.ts";
import { Tickets } from "./tickets.ts";
import type { JoinedClone } from "./join-answer.ts";
import { type ClusterContext, memberRequest } from "./cluster-context.ts";
import { type HostRoom, spread, surveyRooms } from "./placement.ts";
import { readFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { getpid } from "../sys/process.ts";
import { settledOrAfter } from "../timeouts.ts";

/** A VM's answer to a message its inbox has no room for (GuestLimits): the sender's sf_send fails with SF_EDQUOT. */
const INBOX_FULL = "the family member's inbox is full";

export interface HostMemoryStats {
  clones: number;
  bytesReceived: number;
  pagesFetched: number;
  pagesMulticast: number;
}

export interface FamilyStats extends Required<CloneMemoryStats> {
  clones: number;
  serverBytesSent: number;
  /** Frames (mcdist) and answers (memory server) the parent's servers sent. */
  serverFramesSent: number;
  /** mcdist: pages the parent's servers sent more than once (retransmissions). */
  serverPagesResent: number;
  /** mcdist: pages asked for again that the servers did not send again (a queued or recent send answered them). */
  serverDuplicatesSuppressed: number;
  /** mcdist: pages clones asked for first that a send queued or made for a sibling answered (not sent again). */
  serverRequestsCollapsed: number;
  /** Descriptor bytes written, over every clone round. */
  descriptorBytes: number;
  /** For a family spread over a cluster: what each host's clones received. */
  hosts?: Record<string, HostMemoryStats>;
  /** Pages the clones never fetched, by the heuristic that spared them (prefetch spares faults, not pages). */
  pagesAvoided: Record<Exclude<Heuristic, "prefetch">, number>;
}

interface Member {
  name: string;
  /** The inventory host it runs on, when that is not this one. */
  host?: string;
  status: number | undefined;
  memory?: CloneMemoryStats;
  started: PromiseWithResolvers<StartTimes>;
}

export interface FamilyIdentity {
  name: string;
  cmdline: string;
  memoryBytes: number;
  /** For a clone: the parent's name and this VM's clone ID. */
  parent?: string;
  cloneId?: number;
}

/** One clone round's memory servers and the clones that may fault on them. */
interface ServerRound {
  server?: MemoryServer;
  mcdist?: McdistServer;
  cloneIds: number[];
  /** The round (or its checkpoint) is let go: no more clones will be made from it. */
  released: boolean;
}

/** What a round's servers sent: answers of the memory server, frames of mcdist. */
function serverTotals(round: ServerRound) {
  const server = round.server?.stats();
  const mcdist = round.mcdist?.stats();
  return {
    bytesSent: (server?.bytesSent ?? 0) + (mcdist?.bytesSent ?? 0),
    framesSent: (server?.messagesSent ?? 0) + (mcdist?.framesSent ?? 0),
    pagesResent: mcdist?.pagesResent ?? 0,
    duplicatesSuppressed: mcdist?.duplicatesSuppressed ?? 0,
    requestsCollapsed: mcdist?.requestsCollapsed ?? 0,
  };
}

/** Adds a clone's memory counters into `into`. */
function addMemoryStats(into: CloneMemoryStats, memory: CloneMemoryStats | undefined): void {
  if (!memory) return;
  into.faults += memory.faults;
  into.pagesFetched += memory.pagesFetched;
  into.pagesMulticast = (into.pagesMulticast ?? 0) + (memory.pagesMulticast ?? 0);
  into.framesRejected = (into.framesRejected ?? 0) + (memory.framesRejected ?? 0);
  into.retries = (into.retries ?? 0) + (memory.retries ?? 0);
  into.framesShed = (into.framesShed ?? 0) + (memory.framesShed ?? 0);
  into.pagesZeroFilled += memory.pagesZeroFilled;
  into.pagesFreeFilled = (into.pagesFreeFilled ?? 0) + (memory.pagesFreeFilled ?? 0);
  into.pagesAllocationFilled = (into.pagesAllocationFilled ?? 0) + (memory.pagesAllocationFilled ?? 0);
  into.pagesPrefetched = (into.pagesPrefetched ?? 0) + (memory.pagesPrefetched ?? 0);
  into.bytesReceived += memory.bytesReceived;
  const histogram = (into.faultServiceHistogram ??= []);
  (memory.faultServiceHistogram ?? []).forEach((count, i) => (histogram[i] = (histogram[i] ?? 0) + count));
}

/** A clone's report in forks[] gets how it ended and what its memory cost, once it has ended. */
function noteEnd(report: CloneReport, member: Member | undefined): void {
  if (member?.status === undefined) return;
  report.exitStatus = member.status;
  if (member.memory) report.memory = member.memory;
}

/** Clone rounds kept for --json's forks[]; their counts are in stats either way. */
const MAX_FORK_HISTORY = 64;

export class Family implements FamilyCalls {
  /** Each ticket's rooms: for a family spread over a cluster, each host's room when the ticket was granted. */
  private readonly tickets: Tickets<HostRoom[] | undefined>;
  private clones = new Map<number, Member>();
  /** Clone ID → the result it exited with (sf exit STATUS RESULT), until a join reports it. */
  private results = new Map<number, string>();
  /**
   * Ended clones that no unjoined ticket still waits for, added up per host ("" for this one):
   * their members are dropped, so a VM that forks all day keeps counters, not a record a clone.
   */
  private retired = new Map<string, { clones: number; memory: CloneMemoryStats }>();
  private clonesEver = 0;
  private descriptorBytesEver = 0;
  private nextOperatorCloneId = 1;
  /** `inUse`: clones are being made from it, so its image must stay open (clones open it by fd number). */
  private checkpoints = new Map<number, { source: CloneSource; inUse: number }>();
  /** Checkpoints being made: they count against the limit too. */
  private pendingCheckpoints = 0;
  /** Each clone round's memory servers, until every clone that may fault on them has ended. */
  private rounds = new Map<CloneSource, ServerRound>();
  /** What the servers of closed rounds sent, for stats(). */
  private closedServers = { bytesSent: 0, framesSent: 0, pagesResent: 0, duplicatesSuppressed: 0, requestsCollapsed: 0 };
  /** This run of the VM, unlike any earlier VM of the same name. */
  readonly incarnation = `${getpid()}-${randomBytes(6).toString("hex")}`;
  /** The newest clone rounds (MAX_FORK_HISTORY), with their phase times, for --json. */
  readonly forks: ForkResult[] = [];
  private nextCheckpoint = 1;
  private inbox: Array<{ from: number; data: Uint8Array }> = [];
  private inboxBytes = 0;
  private inboxWaiters: Array<() => void> = [];

  constructor(
    private readonly machine: Machine,
    private readonly self: FamilyIdentity,
    private readonly maxClones: number,
    /** How clones made by the guest (sf_clone, checkpoints) get their memory. */
    private readonly memoryPath: MemoryPath,
    /** The cluster the family spreads over (`--cluster`), or none: every clone on this host. */
    private readonly cluster?: ClusterContext,
    /** How clones on other hosts get their pages (`--transport`). */
    private readonly transport: RemoteTransport = "packet",
    /** Avoidance heuristics the clones leave off (`--no-heuristic`). */
    private readonly heuristicsOff: Heuristic[] = [],
    /** What the guest may make this VMM keep (SNOWFLOCK_GUEST_LIMITS). */
    private readonly limits: GuestLimits = guestLimits(),
  ) {
    cluster?.placement.set(self.name, cluster.host.name);
    this.tickets = new Tickets(limits.tickets, {
      status: (id) => this.memberStatus(id),
      probe: (ids) => this.probeRemoteMembers(ids),
      end: async (id) => {
        const member = this.clones.get(id);
        if (member) await memberRequest(this.cluster, member.name, "kill").catch(() => undefined);
      },
    });
  }

  get cloneId(): number {
    return this.self.cloneId ?? 0;
  }

  /** `snowflock fork`: clones with fresh IDs, outside any ticket. */
  async operatorFork(count: number, memory: MemoryPath, spreadOverCluster = false, transport = this.transport): Promise<ForkResult> {
    if (spreadOverCluster && !this.cluster)
      throw new SnowflockError(
        "USAGE",
        `VM '${this.self.name}' was not started with --cluster`,
        "start it with `snowflock run ... --cluster`, or fork without --cluster",
      );
    const ids = Array.from({ length: count }, (_, i) => this.nextOperatorCloneId + i);
    this.nextOperatorCloneId += count;
    const rooms = spreadOverCluster
      ? this.rooms().then((rooms) => {
          const room = rooms.reduce((sum, r) => sum + r.room, 0);
          if (room < count)
            throw new SnowflockError(
              "VM_STATE",
              `the cluster has room for ${room} more clone(s) of ${this.self.name}, not ${count}`,
              "`snowflock cluster status` shows the hosts and their clones",
            );
          return rooms;
        })
      : undefined;
    return this.fork(ids, memory, undefined, undefined, rooms, transport);
  }

  private async fork(
    ids: number[],
    memory: MemoryPath,
    cloneCall?: CloneCall,
    checkpoint?: CloneSource,
    rooms?: HostRoom[] | Promise<HostRoom[]>,
    transport = this.transport,
  ): Promise<ForkResult> {
    const cluster = this.cluster;
    // A survey of the hosts' room still under way goes on while the parent is captured: placement
    // is decided while the descriptor is made, and the fork waits for the longer of the two.
    const [captured, surveyed] = await Promise.allSettled([checkpoint ?? this.capture(memory, cloneCall, transport), rooms]);
    if (captured.status === "rejected") throw captured.reason;
    const source = captured.value;
    if (surveyed.status === "rejected") {
      if (!checkpoint) this.release(source);
      throw surveyed.reason;
    }
    const placement = cluster && surveyed.value ? spread(ids, surveyed.value, cluster.host.name) : new Map<number, string>();
    const remoteHost = (id: number) => (cluster && placement.get(id) !== cluster.host.name ? placement.get(id) : undefined);
    // Members exist before their processes do: a fast clone may report its end at once.
    for (const id of ids) {
      const name = `${this.self.name}.${id}`;
      this.clones.set(id, { name, host: remoteHost(id), status: undefined, started: Promise.withResolvers<StartTimes>() });
      this.clonesEver++;
      if (cluster) cluster.placement.set(name, placement.get(id) ?? cluster.host.name);
    }
    const awaitStart = (id: number) => this.clones.get(id)!.started.promise;
    let result: ForkResult;
    try {
      const local = ids.filter((id) => remoteHost(id) === undefined);
      const remote = Map.groupBy(
        ids.filter((id) => remoteHost(id) !== undefined),
        (id) => remoteHost(id)!,
      );
      // Clones here are told the placement too: their siblings may be on other hosts.
      const launch = { cluster: cluster?.environment(this.incarnation), heuristicsOff: this.heuristicsOff };
      const [here, ...there] = await Promise.all([
        spawnClones(source, local, awaitStart, launch),
        ...[...remote].map(([host, hostIds]) => this.spawnRemote(source, host, hostIds)),
      ]);
      result = here!;
      if (cluster) for (const clone of result.clones) clone.host = cluster.host.name;
      for (const part of there) {
        result.clones.push(...part.clones);
        result.failed.push(...part.failed);
      }
      result.clones.sort((a, b) => a.cloneId - b.cloneId);
      result.totalMs = performance.now() - source.startedAt;
    } finally {
      this.roundOf(source)?.cloneIds.push(...ids);
      if (!checkpoint) this.release(source);
    }
    for (const f of result.failed) this.clones.get(Number(f.name.slice(f.name.lastIndexOf(".") + 1)))!.status = CloneStatus.CRASHED;
    if (result.failed.length > 0) this.tickets.memberEnded();
    // A fast clone may have ended before its round was recorded.
    for (const clone of result.clones) noteEnd(clone, this.clones.get(clone.cloneId));
    this.closeEndedRounds();
    this.retireEnded();
    this.descriptorBytesEver += result.descriptorBytes;
    this.forks.push(result);
    this.forks.splice(0, this.forks.length - MAX_FORK_HISTORY);
    this.nextOperatorCloneId = Math.max(this.nextOperatorCloneId, ...ids.map((id) => id + 1));
    return result;
  }

  private capture(memory: MemoryPath, cloneCall?: CloneCall, transport = this.transport): Promise<CloneSource> {
    return captureClones(
      this.machine,
      { name: this.self.name, cmdline: this.self.cmdline },
      memory,
      cloneCall,
      this.cluster?.serving(transport),
    );
  }

  /** Each host's room for clones of this VM now. */
  private rooms(): Promise<HostRoom[]> {
    return surveyRooms(this.cluster!, this.self.memoryBytes);
  }

  /** Asks `hostName`'s agent to start clones `ids` from the source, memory from this host's server over TCP. */
  private async spawnRemote(source: CloneSource, hostName: string, ids: number[]): Promise<Pick<ForkResult, "clones" | "failed">> {
    const cluster = this.cluster!;
    const startedAt = performance.now();
    const order: CloneOrder = {
      parent: this.self.name,
      parentHost: cluster.host.name,
      // With mcdist the descriptor travels by multicast too (up to what one request fetches); the order carries its digest.
      descriptor:
        source.mcdist && source.descriptorBytes <= MAX_MULTICAST_DESCRIPTOR
          ? { bytes: source.descriptorBytes, sha256: source.descriptorSha256 }
          : readFileSync(source.descriptorPath).toString("base64"),
      cloneIds: ids,
      placement: Object.fromEntries(cluster.placement),
      parentIncarnation: this.incarnation,
      heuristicsOff: this.heuristicsOff,
      memory: remoteMemory(source),
    };
    try {
      const answer = (await cluster.agentCall(cluster.hostNamed(hostName), "clone", order, CLONE_ORDER_TIMEOUT_MS)) as CloneOrderResult;
      const readyMs = performance.now() - startedAt;
      return {
        clones: answer.started.map((c) => ({
          name: c.name,
          host: hostName,
          cloneId: c.cloneId,
          pid: c.pid,
          fromPool: c.fromPool,
          readyMs,
          restoredMs: c.builtMs,
          runningMs: c.runningMs,
        })),
        failed: answer.failed.map((f) => ({ name: `${this.self.name}.${f.cloneId}`, error: `on ${hostName}: ${f.error}` })),
      };
    } catch (error) {
      return {
        clones: [],
        failed: ids.map((id) => ({ name: `${this.self.name}.${id}`, error: `on ${hostName}: ${(error as Error).message}` })),
      };
    }
  }

  /** The round of memory servers `source` brought (none for copy-on-write alone). */
  private roundOf(source: CloneSource): ServerRound | undefined {
    if (!source.server && !source.mcdist) return undefined;
    let round = this.rounds.get(source);
    if (!round) this.rounds.set(source, (round = { server: source.server, mcdist: source.mcdist?.server, cloneIds: [], released: false }));
    return round;
  }

  /** The clones have opened what they need; a memory server stays while they may still fault. */
  private release(source: CloneSource): void {
    releaseClones(source);
    const round = this.roundOf(source);
    if (round) round.released = true;
    this.closeEndedRounds();
  }

  /**
   * Closes the servers of every round no clone can fault on any more (released, and all its clones
   * ended): a VM that forks all day must not keep a socket, a Worker and an image per round.
   */
  private closeEndedRounds(): void {
    for (const [source, round] of this.rounds) {
      if (!round.released || round.cloneIds.some((id) => this.memberStatus(id) === undefined)) continue;
      this.rounds.delete(source);
      this.closeRound(round);
    }
  }

  private closeRound(round: ServerRound): void {
    const sent = serverTotals(round);
    for (const key of Object.keys(sent) as Array<keyof typeof sent>) this.closedServers[key] += sent[key];
    round.server?.close();
    void round.mcdist?.close();
  }

  /** A clone's VMM reports that its vCPUs run. */
  cloneStarted(cloneId: number, times: StartTimes): void {
    this.clones.get(cloneId)?.started.resolve(times);
  }

  /**
   * A clone's VMM (or its host's agent) reports how its VM ended (and, for `ondemand`, its
   * memtap's counters). A report for another run of a VM with this name is not ours.
   */
  cloneEnded(cloneId: number, status: number, memory?: CloneMemoryStats, incarnation?: string, result?: string): void {
    const member = this.clones.get(cloneId);
    if (!member || member.status !== undefined) return;
    if (incarnation !== undefined && incarnation !== this.incarnation) return;
    member.status = status;
    member.memory = memory;
    // Kept for a join only: a clone no ticket waits for (made by `snowflock fork`) is never joined.
    if (result !== undefined && this.tickets.awaited().has(cloneId)) this.results.set(cloneId, result);
    const report = this.forks.flatMap((round) => round.clones).findLast((c) => c.cloneId === cloneId && c.exitStatus === undefined);
    if (report) noteEnd(report, member);
    this.closeEndedRounds();
    this.retireEnded();
    this.tickets.memberEnded();
  }

  /** Drops the members of ended clones no unjoined ticket waits for, keeping their counters. */
  private retireEnded(): void {
    const awaited = this.tickets.awaited();
    for (const [id, member] of this.clones) {
      if (member.status === undefined || awaited.has(id)) continue;
      const retired = this.retired.get(member.host ?? "") ?? {
        clones: 0,
        memory: { faults: 0, pagesFetched: 0, pagesZeroFilled: 0, bytesReceived: 0 },
      };
      retired.clones++;
      addMemoryStats(retired.memory, member.memory);
      this.retired.set(member.host ?? "", retired);
      this.clones.delete(id);
    }
  }

  /** A message from family member `from` arrived for this VM: the answer its sender gets (refused if the inbox is full). */
  deliver(from: number, data: Uint8Array): ControlResponse {
    const full = this.inbox.length >= this.limits.inboxMessages || this.inboxBytes + data.byteLength > this.limits.inboxBytes;
    if (full) return { ok: false, error: INBOX_FULL };
    this.inbox.push({ from, data });
    this.inboxBytes += data.byteLength;
    for (const wake of this.inboxWaiters.splice(0)) wake();
    return { ok: true };
  }

  async requestTicket(wanted: bigint): Promise<{ ticket: number; granted: number } | GuestErrorCode> {
    if (wanted < 1n) return GuestError.EINVAL;
    return this.tickets.grant(async () => {
      // Policy: at most --max-clones, and no more than could each write all their memory: on this
      // host, or over the cluster's hosts (each agent's limit and free memory).
      const rooms = this.cluster ? await this.rooms() : undefined;
      const room = rooms ? rooms.reduce((sum, r) => sum + r.room, 0) : Math.floor(freemem() / this.self.memoryBytes);
      const granted = Math.min(Number(wanted > 1_000_000n ? 1_000_000n : wanted), this.maxClones, Math.max(1, room));
      return { granted, extra: rooms && room > 0 ? rooms : undefined };
    });
  }

  async clone(ticketId: bigint, blockAddress: number): Promise<bigint> {
    const ticket = this.tickets.startClones(ticketId);
    if (typeof ticket === "bigint") return ticket;
    await this.fork(ticket.cloneIds, this.memoryPath, { block: blockAddress, returns: "clone-id" }, undefined, ticket.extra);
    return 0n;
  }

  /** Captures the parent now; clones made from it later start here, where the call returns 0. */
  async checkpoint(blockAddress: number): Promise<bigint> {
    if (this.checkpoints.size + this.pendingCheckpoints >= this.limits.checkpoints) return GuestError.EDQUOT;
    this.pendingCheckpoints++;
    try {
      const source = await this.capture(this.memoryPath, { block: blockAddress, returns: "zero" });
      const id = this.nextCheckpoint++;
      this.checkpoints.set(id, { source, inUse: 0 });
      return BigInt(id);
    } finally {
      this.pendingCheckpoints--;
    }
  }

  private checkpointNamed(id: bigint) {
    return id > 0n && id < 1_000_000n ? this.checkpoints.get(Number(id)) : undefined;
  }

  async createClones(checkpointId: bigint, ticketId: bigint): Promise<bigint> {
    const checkpoint = this.checkpointNamed(checkpointId);
    if (!checkpoint) return GuestError.EINVAL;
    const ticket = this.tickets.startClones(ticketId);
    if (typeof ticket === "bigint") return ticket;
    checkpoint.inUse++;
    try {
      await this.fork(ticket.cloneIds, checkpoint.source.memory, undefined, checkpoint.source, ticket.extra);
    } finally {
      checkpoint.inUse--;
    }
    return 0n;
  }

  /** The guest lets a checkpoint go: its image is closed here, and freed once the clones made from it have ended. */
  releaseCheckpoint(checkpointId: bigint): bigint {
    const checkpoint = this.checkpointNamed(checkpointId);
    if (!checkpoint) return GuestError.EINVAL;
    if (checkpoint.inUse > 0) return GuestError.EBUSY;
    this.checkpoints.delete(Number(checkpointId));
    this.release(checkpoint.source);
    return 0n;
  }

  /** The checkpoints' images and descriptors go when the VM does. */
  close(): void {
    for (const { source } of this.checkpoints.values()) this.release(source);
    this.checkpoints.clear();
    for (const round of this.rounds.values()) this.closeRound(round);
    this.rounds.clear();
  }

  /** What the family's clones reported about their memory, added up. */
  stats(): FamilyStats {
    const totals: FamilyStats = {
      clones: this.clonesEver,
      faults: 0,
      pagesFetched: 0,
      pagesMulticast: 0,
      framesRejected: 0,
      retries: 0,
      framesShed: 0,
      pagesZeroFilled: 0,
      bytesReceived: 0,
      faultServiceHistogram: [],
      serverBytesSent: 0,
      serverFramesSent: 0,
      serverPagesResent: 0,
      serverDuplicatesSuppressed: 0,
      serverRequestsCollapsed: 0,
      descriptorBytes: this.descriptorBytesEver,
      pagesAvoided: { "known-zero": 0, "free-pages": 0, "allocation-hints": 0 },
      pagesFreeFilled: 0,
      pagesAllocationFilled: 0,
      pagesPrefetched: 0,
    };
    const hosts: Record<string, HostMemoryStats> = {};
    const add = (hostName: string | undefined, clones: number, memory: CloneMemoryStats | undefined) => {
      addMemoryStats(totals, memory);
      if (!this.cluster) return;
      const host = (hosts[hostName || this.cluster.host.name] ??= { clones: 0, bytesReceived: 0, pagesFetched: 0, pagesMulticast: 0 });
      host.clones += clones;
      host.bytesReceived += memory?.bytesReceived ?? 0;
      host.pagesFetched += memory?.pagesFetched ?? 0;
      host.pagesMulticast += memory?.pagesMulticast ?? 0;
    };
    for (const m of this.clones.values()) add(m.host, 1, m.memory);
    for (const [host, r] of this.retired) add(host, r.clones, r.memory);
    if (this.cluster) totals.hosts = hosts;
    // Every page filled with zeros locally was spared by one heuristic: free-pages or allocation-hints, or else known-zero.
    totals.pagesAvoided["free-pages"] = totals.pagesFreeFilled;
    totals.pagesAvoided["allocation-hints"] = totals.pagesAllocationFilled;
    totals.pagesAvoided["known-zero"] = totals.pagesZeroFilled - totals.pagesFreeFilled - totals.pagesAllocationFilled;
    const sent = { ...this.closedServers };
    for (const round of this.rounds.values()) {
      const more = serverTotals(round);
      for (const key of Object.keys(sent) as Array<keyof typeof sent>) sent[key] += more[key];
    }
    totals.serverBytesSent = sent.bytesSent;
    totals.serverFramesSent = sent.framesSent;
    totals.serverPagesResent = sent.pagesResent;
    totals.serverDuplicatesSuppressed = sent.duplicatesSuppressed;
    totals.serverRequestsCollapsed = sent.requestsCollapsed;
    return totals;
  }

  private memberStatus(id: number): number | undefined {
    const member = this.clones.get(id);
    if (!member) return CloneStatus.CRASHED;
    if (member.status !== undefined || member.host !== undefined) return member.status;
    const record = readRecord(member.name);
    if (!record || !vmAlive(record)) member.status = CloneStatus.KILLED;
    return member.status;
  }

  joinable(ticketId: bigint): { clones: number } | GuestErrorCode {
    return this.tickets.joinable(ticketId);
  }

  async join(ticketId: bigint): Promise<number[]> {
    const cloneIds = this.tickets.open().find((t) => t.ticket === ticketId)?.cloneIds ?? [];
    const statuses = await this.tickets.join(ticketId);
    for (const id of cloneIds) this.results.delete(id); // sf_join reports statuses only
    this.retireEnded();
    return statuses;
  }

  /**
   * Clones on other hosts report their end themselves, and their agent reports a clone that died
   * silently; what neither can report is a host that vanished. Such clones count as crashed.
   */
  private async probeRemoteMembers(ids: number[]): Promise<void> {
    await Promise.all(
      ids.map(async (id) => {
        const member = this.clones.get(id);
        if (!member || member.host === undefined || member.status !== undefined) return;
        try {
          const answer = await this.cluster!.relay(member.name, "status");
          if (!answer.found) member.status ??= CloneStatus.KILLED;
        } catch {
          member.status ??= CloneStatus.CRASHED;
        }
      }),
    );
  }

  /**
   * Joins every ticket cloned and not joined (`sf join` of the Linux tool): the clones with their
   * statuses and results. `nonblocking`: SF_EAGAIN while one still runs, so the guest polls
   * instead of holding its vCPU.
   */
  async joinAll(nonblocking: boolean): Promise<JoinedClone[] | GuestErrorCode> {
    if (nonblocking && !(await this.tickets.openEnded())) return GuestError.EAGAIN;
    const ended: JoinedClone[] = [];
    for (const { ticket, cloneIds } of this.tickets.open()) {
      const statuses = await this.tickets.join(ticket);
      cloneIds.forEach((cloneId, i) => {
        const result = this.results.get(cloneId);
        ended.push({ cloneId, status: statuses[i]!, ...(result === undefined ? {} : { result }) });
        this.results.delete(cloneId);
      });
    }
    this.retireEnded();
    return ended;
  }

  /** sf_kill of ticket 0: ends the running clones of every ticket cloned and not joined; how many. */
  async kill(ticketId: bigint): Promise<bigint> {
    if (ticketId === 0n) return BigInt(await this.tickets.killOpen());
    return this.tickets.kill(ticketId);
  }

  /** Ends this VM's clones still running, here or on other hosts; waits at most `timeoutMs` for their answers. */
  async endClones(timeoutMs: number): Promise<void> {
    const running = [...this.clones.values()].filter((member) => member.status === undefined);
    await settledOrAfter(
      Promise.all(running.map((member) => memberRequest(this.cluster, member.name, "kill").catch(() => undefined))),
      timeoutMs,
    );
  }

  /** The VMM name of family member `id` (0 = the parent of the family), if there is one. */
  private memberName(id: number): string | undefined {
    if (this.self.parent === undefined) return id === 0 ? undefined : this.clones.get(id)?.name;
    return id === 0 ? this.self.parent : `${this.self.parent}.${id}`;
  }

  async send(destination: bigint, data: Uint8Array): Promise<bigint> {
    if (destination > 1_000_000n || Number(destination) === this.cloneId) return GuestError.EINVAL;
    const name = this.memberName(Number(destination));
    if (!name) return GuestError.ESRCH;
    const answer = await memberRequest(this.cluster, name, {
      op: "message",
      from: this.cloneId,
      data: Buffer.from(data).toString("base64"),
    }).catch(() => undefined);
    if (answer?.ok) return BigInt(data.byteLength);
    return answer && !answer.ok && answer.error === INBOX_FULL ? GuestError.EDQUOT : GuestError.ESRCH;
  }

  async receive(capacity: bigint, nonblocking: boolean): Promise<{ from: number; data: Uint8Array } | GuestErrorCode> {
    while (this.inbox.length === 0) {
      if (nonblocking) return GuestError.EAGAIN;
      await new Promise<void>((wake) => this.inboxWaiters.push(wake));
    }
    const message = this.inbox[0]!;
    if (BigInt(message.data.byteLength) > capacity) return GuestError.E2BIG;
    this.inbox.shift();
    this.inboxBytes -= message.data.byteLength;
    return message;
  }
}
