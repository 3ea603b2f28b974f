/**
 * `snowflock fork DOMU --clones N --cluster` where the hypervisor runs the VMs (a Xen dom0): the
 * family spread over the cluster's hosts by the same placement as KVM's (placement.ts: round-robin
 * over the hosts with room, this one last). One round of the clone pipeline here suspends the
 * parent once: it builds and starts the clones placed on this host as a local fork does, and
 * freezes the parent's memory into an image, which a server in this process serves on this
 * host's end of the cluster: the memory server over TCP, or mcdist (`packet`, `udp`: every page
 * answered to all hosts at once). Every other host's agent gets one signed clone order with the
 * descriptor (state, libxl configuration, page bitmap, the pages a clone needs first) and copies
 * the memory once for all its clones (eager), or pages it in as they fault (on demand, where Xen
 * pages). The fork returns once every host answered. Eager, the server goes with it, since the
 * clones then hold all their memory; on demand it serves on until the clones on other hosts have
 * ended (keepServing: the agent holds it). The same spread serves a
 * guest's own `sf clone` (domain-guests.ts): the parent given by domid, the ticket's clone IDs,
 * and each clone told its ID before it runs.
 */
import { randomBytes } from "node:crypto";
import type { DomainOperations, DomainRoundOptions, StartedDomain } from "../backend/backend.ts";
import { describeDomain } from "../clone/describe.ts";
import { memoryFigures } from "../clone/domain-fork.ts";
import { type FamilyMulticast, multicastMemory, startFamilyMulticast } from "../clone/family-multicast.ts";
import type { CloneReport, ForkResult, RemoteTransport } from "../clone/fork-result.ts";
import { captureRound } from "../clone/pipeline.ts";
import { encodeDescriptor } from "../descriptor/format.ts";
import { SnowflockError } from "../errors.ts";
import { memoryLayout } from "../guest-memory/layout.ts";
import { type MemoryServer, startMemoryServer } from "../memory/memory-server.ts";
import { formatPageServer } from "../memory/page-server-address.ts";
import { getpid } from "../sys/process.ts";
import { scaledTimeout } from "../timeouts.ts";
import type { CloneOrder } from "./clone-order.ts";
import type { ClusterContext } from "./cluster-context.ts";
import { type OrderWatch, sendWatchedOrder } from "./order-watch.ts";
import { spread, surveyRooms } from "./placement.ts";

/**
 * How long the other hosts may take to start their clones (order-watch.ts): as long as their agents
 * report the order moving (asked every 10 s); two minutes without a word is a stuck order.
 */
const ORDER_WATCH: OrderWatch = { pollMs: scaledTimeout(10_000), quietMs: scaledTimeout(120_000), capMs: scaledTimeout(6 * 3600_000) };

export interface SpreadOptions {
  workDirectory: string;
  progress?: (line: string) => void;
  /** The clones' IDs (a guest's ticket); by default the next free ones in the parent's family here. */
  cloneIds?: number[];
  /** How the clones get memory, here and on the other hosts (default eager). */
  memory?: "eager" | "ondemand";
  /** Takes the image served to clones on other hosts with memory on demand, to close once they have ended; required for them. */
  keepServing?: (served: ServedImage) => void;
  /** How the other hosts fetch the image (default tcp). */
  transport?: RemoteTransport;
  /** A guest's `sf clone` request (its sequence number): every clone, here or elsewhere, answers it with its ID. */
  replySeq?: string;
  /** Where each clone goes, before any starts (a clone may end before the fork returns). */
  onPlacement?: (clones: Array<{ cloneId: number; name: string; host: string }>) => void;
  onCloneReady?: DomainRoundOptions["onCloneReady"];
  onParentResumed?: DomainRoundOptions["onParentResumed"];
}

/** The parent's frozen memory, still served to its clones with memory on demand on other hosts. */
export interface ServedImage {
  parentDomain: number;
  /** The clones on other hosts that page from it. */
  cloneIds: number[];
  close(): Promise<void>;
}

/** The family of domain `parent` (a name, or its domid for a guest's own request) spread over the cluster; see the file comment. */
export async function forkDomainAcross(
  domains: DomainOperations,
  cluster: ClusterContext,
  parent: string | number,
  clones: number,
  options: SpreadOptions,
): Promise<ForkResult> {
  const say = options.progress ?? (() => {});
  const listing = (await domains.list()).find((d) => (typeof parent === "number" ? d.id === parent : d.name === parent));
  if (!listing) throw new SnowflockError("NOT_FOUND", `no domain named '${parent}'`, "`snowflock ls` shows the domains");
  const parentName = listing.name;
  const here = cluster.host.name;
  const rooms = await surveyRooms(cluster, listing.memoryBytes);
  // IDs follow those of the parent's clones still running, here and on the other hosts.
  const elsewhere = rooms.flatMap((r) => (r.clones ?? []).filter((c) => c.parentHost === here && c.name.startsWith(`${parentName}.`)));
  const first = Math.max(
    domains.nextCloneId(listing.id, { clones: 0 }),
    1 + Math.max(0, ...elsewhere.map((c) => Number(c.name.slice(parentName.length + 1))).filter(Number.isInteger)),
  );
  const ids = options.cloneIds ?? Array.from({ length: clones }, (_, i) => first + i);
  const placement = spread(ids, rooms, here);
  if (placement.size < clones)
    throw new SnowflockError(
      "VM_STATE",
      `the cluster has room for ${placement.size} of ${clones} clones of ${parentName} now (${rooms.map((r) => `${r.host}: ${r.room}`).join(", ")})`,
      "`snowflock cluster status` shows each agent; fewer clones, or more hosts",
    );
  const byHost = new Map<string, number[]>();
  for (const [id, host] of placement) byHost.set(host, [...(byHost.get(host) ?? []), id]);
  const local = byHost.get(here) ?? [];
  const remote = [...byHost].filter(([host]) => host !== here);
  const memory = options.memory ?? "eager";
  if (memory === "ondemand" && remote.length > 0 && !options.keepServing)
    throw new SnowflockError(
      "USAGE",
      `clones of ${parentName} with memory on demand on other hosts need a process that stays to serve its memory`,
      "the agent serves it: run `sf clone` inside the domU (the agent's --memory ondemand), or fork with --memory eager",
    );
  say(`placing ${clones} clone(s) of ${parentName}: ${[...byHost].map(([host, hostIds]) => `${host} ${hostIds.length}`).join(", ")}`);
  options.onPlacement?.(ids.map((cloneId) => ({ cloneId, name: `${parentName}.${cloneId}`, host: placement.get(cloneId)! })));

  const round = domains.round(listing.id, local.length, {
    workDirectory: options.workDirectory,
    cloneIds: local,
    // With no clone here the round only freezes the parent's image for the other hosts.
    memory: local.length > 0 ? memory : "eager",
    exportImage: remote.length > 0,
    progress: options.progress,
    onCloneReady: options.onCloneReady,
    onParentResumed: options.onParentResumed,
  });
  const transport = options.transport ?? "tcp";
  let server: MemoryServer | undefined;
  let multicast: FamilyMulticast | undefined;
  const stopServing = async () => {
    server?.close();
    await multicast?.server.close();
    round.exported()?.close();
  };
  let served = false;
  try {
    const { source, timings, startedAt } = await captureRound(round);
    const image = round.exported();
    let descriptor = "";
    let descriptorBytes = 0;
    if (remote.length > 0) {
      if (!image) throw new SnowflockError("INTERNAL", `the round of ${parentName} exported no image for the other hosts`);
      const bytes = encodeDescriptor(describeDomain(image.snapshot));
      if (transport === "tcp")
        server = await startMemoryServer({
          imageFd: image.fd,
          layout: memoryLayout(image.snapshot.state.memorySize),
          tcpAddress: cluster.host.address,
        });
      else multicast = await startFamilyMulticast(image.fd, image.snapshot.state.memorySize, { ...cluster.serving(transport), transport });
      descriptor = Buffer.from(bytes).toString("base64");
      descriptorBytes = bytes.byteLength;
    }
    const order = (hostIds: number[]): CloneOrder => ({
      parent: parentName,
      parentHost: here,
      descriptor,
      cloneIds: hostIds,
      placement: Object.fromEntries(ids.map((id) => [`${parentName}.${id}`, placement.get(id)!])),
      memory: multicast ? multicastMemory(multicast) : formatPageServer(server!.tcp!),
      parentIncarnation: `${getpid()}-${randomBytes(6).toString("hex")}`,
      heuristicsOff: [],
      parentDomain: listing.id,
      domainMemory: memory,
      ...(options.replySeq !== undefined && { replySeq: options.replySeq }),
    });
    const restoreStarted = performance.now();
    const elapsed = () => performance.now() - startedAt;
    const [localStarted, ...answers] = await Promise.all([
      local.length > 0 ? round.restore(source).then((started) => ({ started, at: elapsed() })) : undefined,
      ...remote.map(async ([host, hostIds]) => {
        say(`asking ${host}'s agent for clone(s) ${hostIds.join(", ")}`);
        try {
          const answer = await sendWatchedOrder(cluster, cluster.hostNamed(host), order(hostIds), ORDER_WATCH);
          return { host, answer, at: elapsed() };
        } catch (error) {
          return { host, error: (error as Error).message, ids: hostIds, at: elapsed() };
        }
      }),
    ]);
    const reports: CloneReport[] = [];
    const failed: ForkResult["failed"] = [];
    const localClones: StartedDomain[] = localStarted?.started.clones ?? [];
    for (const c of localClones)
      reports.push({ ...c, host: here, readyMs: localStarted!.at, restoredMs: restoreStarted - startedAt, runningMs: localStarted!.at });
    for (const a of answers) {
      if ("error" in a) {
        failed.push(...a.ids!.map((id) => ({ name: `${parentName}.${id}`, error: `on ${a.host}: ${a.error}` })));
        continue;
      }
      for (const c of a.answer.started)
        reports.push({
          name: c.name,
          cloneId: c.cloneId,
          domid: c.domid,
          mac: c.mac,
          host: a.host,
          readyMs: a.at,
          restoredMs: c.builtMs,
          runningMs: a.at,
        });
      failed.push(...a.answer.failed.map((f) => ({ name: `${parentName}.${f.cloneId}`, error: `on ${a.host}: ${f.error}` })));
    }
    reports.sort((a, b) => a.cloneId - b.cloneId);
    const pagingElsewhere = memory === "ondemand" ? reports.filter((r) => r.host !== here).map((r) => r.cloneId) : [];
    if (pagingElsewhere.length > 0) {
      options.keepServing!({ parentDomain: listing.id, cloneIds: pagingElsewhere, close: stopServing });
      served = true;
    }
    return {
      backend: "xen",
      parent: parentName,
      memory,
      pausedMs: timings.pausedMs,
      descriptorMs: timings.distributeMs,
      descriptorBytes,
      clones: reports,
      failed,
      totalMs: elapsed(),
      ...(localStarted && memoryFigures(localStarted.started, timings, localStarted.at - (restoreStarted - startedAt))),
      memoryServer: servedFigures(server, multicast, remote.length),
      ...(remote.length > 0 && { transport }),
      shellsReady: 0,
    };
  } catch (error) {
    await round.abandon();
    throw error;
  } finally {
    if (!served) await stopServing();
    await round.release();
  }
}

/** What went to the other hosts: the memory server's answers, or mcdist's frames (every host hears each once). */
function servedFigures(
  server: MemoryServer | undefined,
  multicast: FamilyMulticast | undefined,
  hosts: number,
): ForkResult["memoryServer"] {
  if (server) {
    const s = server.stats();
    return { pagesServed: s.pagesServed, bytesSent: s.bytesSent, clients: s.clients };
  }
  if (!multicast) return undefined;
  const s = multicast.server.stats();
  return { pagesServed: s.pagesSent, bytesSent: s.bytesSent, clients: hosts, framesSent: s.framesSent, pagesResent: s.pagesResent };
}
