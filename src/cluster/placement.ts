/**
 * Placement: how many clones each host of a cluster can take now, and which clone goes where.
 * A host's room is the smaller of what its agent's clone limit leaves and what its free memory
 * holds if every clone wrote all of its guest memory; clones are dealt round-robin over the hosts
 * that have room, the parent's own host last (it already runs the parent), so a family spreads as
 * wide as it can.
 */
import type { AgentHello } from "./agent.ts";
import type { ClusterContext } from "./cluster-context.ts";
import { scaledTimeout } from "../timeouts.ts";

export interface HostRoom {
  host: string;
  room: number;
  /** The clones its agent runs for parents on other hosts: their names and their parents' hosts. */
  clones?: Array<{ name: string; parentHost: string }>;
}

const HELLO_TIMEOUT_MS = scaledTimeout(2000);

export function roomOf(hello: Pick<AgentHello, "freeBytes" | "maxClones" | "clones">, memoryBytes: number): number {
  return Math.max(0, Math.min(hello.maxClones - hello.clones.length, Math.floor(hello.freeBytes / memoryBytes)));
}

/** Asks every agent for its room; a host whose agent does not answer gets none. */
export async function surveyRooms(cluster: ClusterContext, memoryBytes: number): Promise<HostRoom[]> {
  return Promise.all(
    cluster.inventory.hosts.map(async (host) => {
      try {
        const hello = (await cluster.agentCall(host, "hello", null, HELLO_TIMEOUT_MS)) as AgentHello;
        return {
          host: host.name,
          room: roomOf(hello, memoryBytes),
          clones: hello.clones.map(({ name, parentHost }) => ({ name, parentHost })),
        };
      } catch {
        return { host: host.name, room: 0 };
      }
    }),
  );
}

/** Deals `ids` round-robin over hosts with room, `parentHost` last; ids beyond the total room are left out. */
export function spread(ids: number[], rooms: HostRoom[], parentHost: string): Map<number, string> {
  const left = [...rooms.filter((r) => r.host !== parentHost), ...rooms.filter((r) => r.host === parentHost)].map((r) => ({ ...r }));
  const placement = new Map<number, string>();
  let next = 0;
  for (const id of ids) {
    let skipped = 0;
    while (skipped < left.length && left[next % left.length]!.room === 0) next++, skipped++;
    if (skipped === left.length) break;
    const host = left[next % left.length]!;
    host.room--;
    placement.set(id, host.host);
    next++;
  }
  return placement;
}
