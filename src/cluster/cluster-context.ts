/**
 * A VMM's view of the cluster its family spans: the inventory, the host it runs on, and where each
 * member runs. Control requests to a member on this host go to its Unix socket; to a member on
 * another host, through that host's agent (authenticated with the cluster's secret).
 */
import { statSync } from "node:fs";
import { networkInterfaces } from "node:os";
import type { AgentOp } from "./agent-protocol.ts";
import { SnowflockError } from "../errors.ts";
import type { PageServerAddress } from "../memory/page-server-address.ts";
import { controlRequest, type RequestBody } from "../vmm/control-client.ts";
import type { ControlResponse } from "../vmm/protocol.ts";
import { type AgentAddress, agentRequest } from "./agent-client.ts";
import { type Inventory, type InventoryHost, readInventory } from "./inventory.ts";
import type { ClusterEnvironment } from "../clone/cluster-environment.ts";
import type { RemoteServing } from "../clone/family-multicast.ts";
import type { RemoteTransport } from "../clone/fork-result.ts";
import { scaledTimeout } from "../timeouts.ts";

/** How long a relayed control request may take, agent hop included. */
const RELAY_TIMEOUT_MS = scaledTimeout(8000);

/** An agent's answer to a relay: the VM's own answer, or that no such VM runs there. */
export type RelayAnswer = { found: true; response: ControlResponse } | { found: false };

export class ClusterContext {
  constructor(
    readonly inventoryPath: string,
    readonly inventory: Inventory,
    readonly host: InventoryHost,
    /** VM name → inventory host name, for the members this VM knows of. */
    readonly placement: Map<string, string>,
    /** For a clone: which run of its parent it belongs to (its reports carry it). */
    readonly parentIncarnation?: string,
  ) {}

  static load(inventoryPath: string, hostName: string, placement: Record<string, string> = {}, parentIncarnation?: string): ClusterContext {
    const inventory = readInventory(inventoryPath);
    const host = inventory.hosts.find((h) => h.name === hostName);
    if (!host) throw new SnowflockError("USAGE", `no host '${hostName}' in the inventory ${inventoryPath}`);
    return new ClusterContext(inventoryPath, inventory, host, new Map(Object.entries(placement)), parentIncarnation);
  }

  /** What a clone process started on this host is told of the cluster (and of its parent's run, `incarnation`). */
  environment(parentIncarnation: string): ClusterEnvironment {
    return { inventory: this.inventoryPath, host: this.host.name, placement: Object.fromEntries(this.placement), parentIncarnation };
  }

  hostNamed(name: string): InventoryHost {
    const host = this.inventory.hosts.find((h) => h.name === name);
    if (!host) throw new SnowflockError("USAGE", `no host '${name}' in the inventory ${this.inventoryPath}`);
    return host;
  }

  /** How this host serves a frozen image to the other hosts over `transport`: its end of the cluster network. */
  serving(transport: RemoteTransport): RemoteServing {
    return { transport, address: this.host.address, interface: this.host.interface, mtu: this.inventory.mtu };
  }

  agentOf(host: InventoryHost): AgentAddress {
    return { host: host.name, address: host.address, port: host.agentPort };
  }

  agentCall(host: InventoryHost, op: AgentOp, body: unknown, timeoutMs?: number, signal?: AbortSignal): Promise<unknown> {
    return agentRequest(this.agentOf(host), this.inventory.secret, op, body, timeoutMs, signal);
  }

  /** The host a VM runs on, or undefined when it is this one. */
  remoteHostOf(vmName: string): InventoryHost | undefined {
    const hostName = this.placement.get(vmName);
    return hostName === undefined || hostName === this.host.name ? undefined : this.hostNamed(hostName);
  }

  /** A control request to a family member wherever it runs; `found: false` when its host has no such VM. */
  async relay(vmName: string, request: RequestBody | RequestBody["op"]): Promise<RelayAnswer> {
    const body = typeof request === "string" ? ({ op: request } as RequestBody) : request;
    const host = this.remoteHostOf(vmName);
    if (!host) {
      try {
        return { found: true, response: await controlRequest(vmName, body) };
      } catch (error) {
        if (error instanceof SnowflockError && error.code === "NOT_FOUND") return { found: false };
        throw error;
      }
    }
    return (await this.agentCall(host, "relay", { vm: vmName, request: body }, RELAY_TIMEOUT_MS)) as RelayAnswer;
  }
}

/** A control request to a family member: through the cluster when there is one, else on this host. */
export async function memberRequest(
  cluster: ClusterContext | undefined,
  vmName: string,
  body: RequestBody | RequestBody["op"],
): Promise<ControlResponse> {
  if (!cluster) return controlRequest(vmName, body);
  const answer = await cluster.relay(vmName, body);
  if (!answer.found) throw new SnowflockError("NOT_FOUND", `no running VM named '${vmName}'`);
  return answer.response;
}

/**
 * Which inventory host this process runs on: for test hosts, the one whose network namespace this
 * process is in; for real hosts, the one whose address an interface of this machine has.
 */
export function hostOfThisProcess(inventory: Inventory): InventoryHost | undefined {
  let ownNamespace: number | undefined;
  try {
    ownNamespace = statSync("/proc/self/ns/net").ino;
  } catch {}
  for (const host of inventory.hosts) {
    if (host.namespace === null) continue;
    try {
      if (statSync(`/run/netns/${host.namespace}`).ino === ownNamespace) return host;
    } catch {}
  }
  const addresses = new Set(Object.values(networkInterfaces()).flatMap((list) => (list ?? []).map((a) => a.address)));
  return inventory.hosts.find((h) => h.namespace === null && addresses.has(h.address));
}

/** An mcdist memory source needs this host's end of the family's network: its interface (and address, for UDP). */
export function withOwnEnd(server: PageServerAddress, cluster: ClusterContext | undefined): PageServerAddress {
  if (server.kind !== "mcdist" || server.transport) return server;
  if (!cluster) throw new SnowflockError("USAGE", "a clone served by mcdist must know its cluster host (its launch record's cluster)");
  const host = cluster.host;
  return {
    ...server,
    transport:
      server.server.kind === "packet"
        ? { kind: "packet", interface: host.interface }
        : { kind: "udp", interface: host.interface, address: host.address },
  };
}
