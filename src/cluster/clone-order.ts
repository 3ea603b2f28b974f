/**
 * What a parent's VMM sends a host's agent to start clones there, and what clone processes on
 * that host are told about their family (a field of their launch record). Both are
 * checked field by field: the agent acts on the order, so nothing in it is taken on trust beyond
 * the control plane's signature.
 */
import { SnowflockError } from "../errors.ts";
import { MAX_CLONES_PER_FORK } from "../vmm/protocol.ts";
import { checkName } from "../run-dir.ts";
import { parsePageServer } from "../memory/page-server-address.ts";
import { type Heuristic, parseHeuristics } from "../heuristics/heuristics.ts";
import { checkPlacement } from "../clone/cluster-environment.ts";

export interface CloneOrder {
  /** The parent VM's name, and the inventory host it runs on. */
  parent: string;
  parentHost: string;
  /** The descriptor to restore: base64, or (with mcdist) its size and SHA-256, for clones to fetch by multicast. */
  descriptor: string | { bytes: number; sha256: string };
  cloneIds: number[];
  /** Where every member of the family runs: VM name → inventory host name. */
  placement: Record<string, string>;
  /** The parent's memory server (formatPageServer's text form: tcp:... or mcdist:...). */
  memory: string;
  /** Which run of the parent VM this family belongs to: reports about its clones carry it. */
  parentIncarnation: string;
  /** Avoidance heuristics the clones leave off. */
  heuristicsOff: Heuristic[];
  /** A domain parent (Xen): its domid on its host, which the clones' family keys name. */
  parentDomain?: number;
  /** A domain parent's `sf clone` request that the clones answer (each learns its ID from it). */
  replySeq?: string;
  /** How a domain parent's clones get its memory: copied before they run (the default), or paged in on demand. */
  domainMemory?: "eager" | "ondemand";
}

/** One clone an agent started: a VMM process (pid), or a domain the hypervisor runs (domid). */
export interface StartedClone {
  cloneId: number;
  name: string;
  pid?: number;
  domid?: number;
  /** A domain's own MAC address. */
  mac?: string;
  /** Inside the clone's process: from its start to the VM restored, and to its vCPUs running. */
  builtMs: number;
  runningMs: number;
  /** Served by a VMM process the host's pool had ready. */
  fromPool?: boolean;
}

export interface CloneOrderResult {
  host: string;
  started: StartedClone[];
  failed: Array<{ cloneId: number; error: string }>;
}

function fail(problem: string): never {
  throw new SnowflockError("USAGE", `bad clone order: ${problem}`);
}

export function checkCloneOrder(value: unknown): CloneOrder {
  if (typeof value !== "object" || value === null) fail("not an object");
  const order = value as Record<string, unknown>;
  if (typeof order.parent !== "string") fail("no parent");
  checkName(order.parent);
  if (typeof order.parentHost !== "string") fail("no parentHost");
  const descriptor = order.descriptor as Record<string, unknown> | string;
  if (typeof descriptor === "string") {
    if (descriptor.length === 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(descriptor)) fail("descriptor must be base64");
  } else if (
    typeof descriptor !== "object" ||
    descriptor === null ||
    !Number.isInteger(descriptor.bytes) ||
    (descriptor.bytes as number) < 1 ||
    typeof descriptor.sha256 !== "string" ||
    !/^[0-9a-f]{64}$/.test(descriptor.sha256)
  ) {
    fail("descriptor must be base64, or its bytes and sha256");
  }
  const ids = order.cloneIds;
  if (
    !Array.isArray(ids) ||
    ids.length === 0 ||
    ids.length > MAX_CLONES_PER_FORK ||
    !ids.every((id) => Number.isInteger(id) && id >= 1 && id <= 1_000_000)
  ) {
    fail(`cloneIds must be 1 to ${MAX_CLONES_PER_FORK} clone IDs`);
  }
  if (new Set(ids).size !== ids.length) fail("cloneIds repeat");
  if (typeof order.memory !== "string") fail("no memory server");
  if (typeof order.parentIncarnation !== "string" || order.parentIncarnation.length === 0 || order.parentIncarnation.length > 64)
    fail("no parentIncarnation");
  const server = parsePageServer(order.memory);
  if (server.kind === "unix" || server.kind === "image")
    fail("the memory server of a clone on another host must be reachable over the network (tcp or mcdist)");
  if (typeof descriptor !== "string" && server.kind !== "mcdist") fail("a descriptor is fetched by multicast only from an mcdist server");
  if (
    order.parentDomain !== undefined &&
    (!Number.isInteger(order.parentDomain) || (order.parentDomain as number) < 1 || (order.parentDomain as number) > 0x7fef)
  )
    fail("parentDomain must be a domid");
  if (order.replySeq !== undefined && (typeof order.replySeq !== "string" || !/^\d{1,24}$/.test(order.replySeq)))
    fail("replySeq must be a request's sequence number");
  if (order.domainMemory !== undefined && order.domainMemory !== "eager" && order.domainMemory !== "ondemand")
    fail("domainMemory must be eager or ondemand");
  if (order.domainMemory !== undefined && order.parentDomain === undefined) fail("domainMemory is for a domain parent (parentDomain)");
  return {
    parent: order.parent,
    parentHost: order.parentHost,
    descriptor: descriptor as CloneOrder["descriptor"],
    cloneIds: ids as number[],
    placement: checkPlacement(order.placement, fail),
    memory: order.memory,
    parentIncarnation: order.parentIncarnation,
    heuristicsOff:
      Array.isArray(order.heuristicsOff) && order.heuristicsOff.every((h) => typeof h === "string")
        ? parseHeuristics(order.heuristicsOff as string[])
        : fail("heuristicsOff must be a list of names"),
    ...(order.parentDomain !== undefined && { parentDomain: order.parentDomain as number }),
    ...(order.replySeq !== undefined && { replySeq: order.replySeq as string }),
    ...(order.domainMemory !== undefined && { domainMemory: order.domainMemory }),
  };
}
