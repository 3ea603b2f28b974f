/**
 * Test hosts on one machine: each "host" is a network namespace `${prefix}-hI` with one interface
 * `eth0` (10.77.0.(10+I)/24, a deterministic MAC), the far end of a veth pair whose other end is
 * a port of the bridge `${prefix}br0`. The bridge lives in a namespace of its own,
 * `${prefix}-switch`, not in the root namespace: nothing is added to the machine's own network,
 * the root namespace's firewall (br_netfilter, Docker's FORWARD policy) never sees the frames,
 * and every packet stays between the test hosts. The bridge floods multicast (snooping off) so
 * mcdist's multicast reaches every host, and forwards at once (no STP delay).
 *
 * Removal works by name: whatever carries the prefix (namespaces `${prefix}-hI` and
 * `${prefix}-switch`, links `${prefix}br0` / `${prefix}-hI` left in the root namespace by
 * hand or by older versions) is removed, and the processes inside those namespaces are ended
 * first, so it also cleans up after a crash or a half-finished `up`.
 */
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { listVms, runDir } from "../run-dir.ts";
import { agentRequest } from "./agent-client.ts";
import type { AgentHello } from "./agent.ts";
import { scaledTimeout } from "../timeouts.ts";
import { SnowflockError } from "../errors.ts";
import { formatMac } from "../net/mac.ts";
import {
  type Inventory,
  type InventoryHost,
  DEFAULT_AGENT_PORT,
  INVENTORY_VERSION,
  defaultInventoryPath,
  readInventory,
  writeInventory,
} from "./inventory.ts";
import {
  ip,
  linkAddresses,
  linkInfo,
  listensInside,
  listLinks,
  listNamespaces,
  namespacePids,
  probeReachable,
  terminate,
} from "./netns.ts";

export const DEFAULT_PREFIX = "sf";
export const TEST_SUBNET = "10.77.0.0/24";
export const MAX_TEST_HOSTS = 240;
/**
 * Test hosts' links carry jumbo frames: veth pairs and a bridge do at no cost, and a page then
 * fits one mcdist frame instead of three (at 1500, receiving every sibling's frames costs clones
 * sharing a core 2.3-2.6x tcp's time to result, against 1.5x at 9000; see the README).
 */
export const TEST_HOST_MTU = 9000;
/** How long `cluster status` waits for a real host's agent to answer. */
const HELLO_TIMEOUT_MS = scaledTimeout(3000);
const PREFIX = /^[a-z][a-z0-9]{0,7}$/;

/** The names a test cluster with this prefix uses. */
export function testHostNames(prefix: string) {
  return {
    switchNamespace: `${prefix}-switch`,
    bridge: `${prefix}br0`,
    hostNamespace: (i: number) => `${prefix}-h${i}`,
    /** The bridge-side end of host i's veth pair (in the switch namespace). */
    port: (i: number) => `${prefix}-h${i}`,
    address: (i: number) => `10.77.0.${10 + i}`,
    /** Locally administered, unicast: 02:73:66 ("sf"), a byte of the prefix's hash, then i. */
    mac: (i: number) => {
      let hash = 0x811c9dc5;
      for (const c of prefix) hash = Math.imul(hash ^ c.charCodeAt(0), 0x01000193) >>> 0;
      const bytes = [0x02, 0x73, 0x66, hash & 0xff, (i >> 8) & 0xff, i & 0xff];
      return formatMac(bytes);
    },
  };
}

export function checkPrefix(prefix: string): string {
  if (!PREFIX.test(prefix)) {
    throw new SnowflockError(
      "USAGE",
      `bad test-host prefix '${prefix}'`,
      "use 1 to 8 lowercase letters or digits, starting with a letter (interface names are limited to 15 characters)",
    );
  }
  return prefix;
}

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
const namespacePattern = (prefix: string) => new RegExp(`^${escapeRegExp(prefix)}-(h\\d+|switch)$`);
const linkPattern = (prefix: string) => new RegExp(`^${escapeRegExp(prefix)}(br0|-h\\d+)$`);

/** Namespaces and root-namespace links that belong to a test cluster with this prefix. */
export async function existingTestHosts(prefix: string): Promise<{ namespaces: string[]; links: string[] }> {
  checkPrefix(prefix);
  const namespaces = (await listNamespaces()).filter((n) => namespacePattern(prefix).test(n));
  const links = (await listLinks(null)).map((l) => l.ifname).filter((n) => linkPattern(prefix).test(n));
  const order = (a: string, b: string) => a.localeCompare(b, undefined, { numeric: true });
  return { namespaces: namespaces.sort(order), links: links.sort(order) };
}

/** The prefixes of the test clusters that exist on this machine (from their namespaces). */
export async function existingClusterPrefixes(): Promise<string[]> {
  const prefixes = (await listNamespaces()).map((n) => /^([a-z][a-z0-9]{0,7})-(h\d+|switch)$/.exec(n)?.[1]).filter((p) => p !== undefined);
  return [...new Set(prefixes)].sort();
}

export interface TestHostsOptions {
  hosts: number;
  mtu?: number;
  prefix?: string;
  agentPort?: number;
  /** Called once per host when it is up (for progress output). */
  onHost?: (host: InventoryHost, index: number) => void;
}

/**
 * Creates `hosts` test hosts and returns their inventory (not written anywhere; see clusterUp).
 * Refuses if anything with the prefix exists already; rolls everything back on failure.
 */
export async function createTestHosts(options: TestHostsOptions): Promise<Inventory> {
  const prefix = checkPrefix(options.prefix ?? DEFAULT_PREFIX);
  const mtu = options.mtu ?? TEST_HOST_MTU;
  const agentPort = options.agentPort ?? DEFAULT_AGENT_PORT;
  if (!Number.isInteger(options.hosts) || options.hosts < 1 || options.hosts > MAX_TEST_HOSTS) {
    throw new SnowflockError("USAGE", `bad number of test hosts '${options.hosts}'`, `give a whole number from 1 to ${MAX_TEST_HOSTS}`);
  }
  if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535)
    throw new SnowflockError("USAGE", `bad MTU '${mtu}'`, "give a whole number from 68 to 65535");
  if (!Number.isInteger(agentPort) || agentPort < 1 || agentPort > 65535)
    throw new SnowflockError("USAGE", `bad agent port '${agentPort}'`, "give a port from 1 to 65535");
  await refuseExisting(prefix);

  const names = testHostNames(prefix);
  const sw = names.switchNamespace;
  const hosts: InventoryHost[] = [];
  try {
    await ip(["netns", "add", sw]);
    await ip([
      "-n",
      sw,
      "link",
      "add",
      names.bridge,
      "mtu",
      String(mtu),
      "type",
      "bridge",
      "stp_state",
      "0",
      "forward_delay",
      "0",
      "mcast_snooping",
      "0",
    ]);
    await ip(["-n", sw, "link", "set", names.bridge, "mtu", String(mtu), "up"]);
    for (let i = 1; i <= options.hosts; i++) {
      const host: InventoryHost = {
        name: `h${i}`,
        namespace: names.hostNamespace(i),
        address: names.address(i),
        interface: "eth0",
        mac: names.mac(i),
        agentPort,
      };
      const ns = host.namespace!;
      await ip(["netns", "add", ns]);
      await ip([
        "-n",
        sw,
        "link",
        "add",
        names.port(i),
        "mtu",
        String(mtu),
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        ns,
        "mtu",
        String(mtu),
        "address",
        host.mac,
      ]);
      await ip(["-n", sw, "link", "set", names.port(i), "master", names.bridge, "up"]);
      await ip(["-n", ns, "addr", "add", `${host.address}/24`, "dev", "eth0"]);
      await ip(["-n", ns, "link", "set", "lo", "up"]);
      await ip(["-n", ns, "link", "set", "eth0", "up"]);
      hosts.push(host);
      options.onHost?.(host, i);
    }
    await verify(names.bridge, sw, hosts, mtu);
  } catch (error) {
    await destroyTestHosts(prefix, { inventoryPath: null }).catch(() => {});
    if (error instanceof SnowflockError) {
      throw new SnowflockError(
        error.code,
        `creating test hosts '${prefix}' failed (everything made was removed again): ${error.message}`,
        error.hint,
        { cause: error },
      );
    }
    throw error;
  }
  return { version: INVENTORY_VERSION, cluster: prefix, secret: randomBytes(32).toString("hex"), bridge: names.bridge, mtu, hosts };
}

async function refuseExisting(prefix: string): Promise<void> {
  const existing = await existingTestHosts(prefix);
  const found = [...existing.namespaces.map((n) => `namespace ${n}`), ...existing.links.map((l) => `link ${l}`)];
  if (found.length > 0) {
    const shown = found.length > 4 ? `${found.slice(0, 4).join(", ")} and ${found.length - 4} more` : found.join(", ");
    throw new SnowflockError(
      "USAGE",
      `a test cluster with prefix '${prefix}' already exists (${shown})`,
      `run \`snowflock cluster down${prefix === DEFAULT_PREFIX ? "" : ` --prefix ${prefix}`}\` first`,
    );
  }
}

/** Checks what was made: MTU, MAC and address of every eth0, and that h1 reaches h2. */
async function verify(bridge: string, switchNamespace: string, hosts: InventoryHost[], mtu: number): Promise<void> {
  const bridgeInfo = await linkInfo(switchNamespace, bridge);
  if (!bridgeInfo || bridgeInfo.mtu !== mtu)
    throw new SnowflockError("INTERNAL", `bridge ${bridge} has MTU ${bridgeInfo?.mtu}, not ${mtu}`);
  for (const host of hosts) {
    const info = await linkInfo(host.namespace, host.interface);
    const addresses = await linkAddresses(host.namespace!, host.interface);
    if (!info || info.mtu !== mtu || info.address !== host.mac || !addresses.includes(`${host.address}/24`)) {
      throw new SnowflockError(
        "INTERNAL",
        `${host.namespace}: ${host.interface} is not as configured (mtu ${info?.mtu}, mac ${info?.address}, ` +
          `addresses ${addresses.join(" ") || "none"})`,
      );
    }
  }
  if (hosts.length >= 2) {
    const [from, to] = [hosts[0]!, hosts[1]!];
    let answer = await probeReachable(from.namespace!, to.address);
    for (let attempt = 0; !answer.ok && attempt < 2; attempt++) answer = await probeReachable(from.namespace!, to.address);
    if (!answer.ok)
      throw new SnowflockError(
        "INTERNAL",
        `${from.name} (${from.address}) cannot reach ${to.name} (${to.address}) over ${bridge}: ${answer.why}`,
      );
  }
}

export interface DestroyReport {
  prefix: string;
  /** PIDs of processes inside the namespaces that were ended. */
  processes: number[];
  /** Links removed from the root namespace (the test hosts' own links go with their namespaces). */
  links: string[];
  namespaces: string[];
  /** The test hosts' run directories removed (their VMs' sockets, records, logs). */
  runDirs: string[];
  /** The inventory file removed, if any. */
  inventory: string | null;
  /** Why an inventory file at the path was left alone, if one was. */
  inventoryKept?: string;
}

/**
 * Removes every namespace and link with the prefix and ends every process inside those
 * namespaces (SIGTERM, then SIGKILL after a bounded wait); then removes the inventory file at
 * `inventoryPath` if it describes this cluster (null: leave files alone). Idempotent.
 */
export async function destroyTestHosts(prefix: string, options: { inventoryPath?: string | null } = {}): Promise<DestroyReport> {
  checkPrefix(prefix);
  const inventoryPath = options.inventoryPath === undefined ? defaultInventoryPath() : options.inventoryPath;
  const report: DestroyReport = { prefix, processes: [], links: [], namespaces: [], runDirs: [], inventory: null };
  const existing = await existingTestHosts(prefix);

  const pids = [...new Set((await Promise.all(existing.namespaces.map(namespacePids))).flat())];
  report.processes = await terminate(pids);

  for (const link of existing.links) {
    // Deleting one end of a veth pair deletes both, so a link may be gone already.
    const info = await linkInfo(null, link);
    if (!info) continue;
    await ip(["link", "del", "dev", link]);
    report.links.push(link);
  }
  // Hosts first, the switch last: a namespace's veth ends vanish with it.
  const ordered = [
    ...existing.namespaces.filter((n) => !n.endsWith("-switch")),
    ...existing.namespaces.filter((n) => n.endsWith("-switch")),
  ];
  for (const namespace of ordered) {
    await ip(["netns", "del", namespace]);
    report.namespaces.push(namespace);
  }

  const hostDir = new RegExp(`^${escapeRegExp(prefix)}-h\\d+$`);
  for (const entry of existsSync(runDir()) ? readdirSync(runDir(), { withFileTypes: true }) : []) {
    if (!entry.isDirectory() || !hostDir.test(entry.name)) continue;
    rmSync(join(runDir(), entry.name), { recursive: true, force: true });
    report.runDirs.push(join(runDir(), entry.name));
  }

  if (inventoryPath && existsSync(inventoryPath)) {
    let cluster: string | undefined;
    try {
      cluster = readInventory(inventoryPath).cluster;
    } catch (error) {
      report.inventoryKept = `${inventoryPath} is not a valid inventory (${(error as Error).message}); left in place`;
    }
    if (cluster === prefix) {
      rmSync(inventoryPath, { force: true });
      report.inventory = inventoryPath;
    } else if (cluster !== undefined) {
      report.inventoryKept = `${inventoryPath} describes cluster '${cluster}', not '${prefix}'; left in place`;
    }
  }
  return report;
}

export interface ClusterUpOptions extends TestHostsOptions {
  /** Where to write the inventory (default: cluster.json in the run directory). */
  inventoryPath?: string;
  /**
   * Hook for the agents: called with the new inventory once the hosts are up and the inventory
   * written. If it throws, the whole cluster is removed again.
   */
  startAgents?: (inventory: Inventory, inventoryPath: string) => Promise<void> | void;
}

/** `cluster up`: refuses an existing inventory or cluster, creates the hosts, writes the inventory, starts agents (if given). */
export async function clusterUp(options: ClusterUpOptions): Promise<Inventory> {
  const prefix = checkPrefix(options.prefix ?? DEFAULT_PREFIX);
  const inventoryPath = options.inventoryPath ?? defaultInventoryPath();
  if (existsSync(inventoryPath)) {
    let described = "";
    try {
      described = ` (cluster '${readInventory(inventoryPath).cluster}')`;
    } catch {
      described = " (not a valid inventory)";
    }
    throw new SnowflockError(
      "USAGE",
      `a cluster inventory already exists at ${inventoryPath}${described}`,
      `run \`snowflock cluster down${inventoryPath === defaultInventoryPath() ? "" : ` --inventory ${inventoryPath}`}\` first`,
    );
  }
  const inventory = await createTestHosts({ ...options, prefix });
  try {
    writeInventory(inventoryPath, inventory);
    await options.startAgents?.(inventory, inventoryPath);
  } catch (error) {
    await destroyTestHosts(prefix, { inventoryPath }).catch(() => {});
    throw error;
  }
  return inventory;
}

/** A test host's agent: its port listens in the namespace, or not; a real host's: it answered a signed hello, or not. */
export type AgentState = "listening" | "not started" | "answering" | "not answering";

export interface HostStatus extends InventoryHost {
  /** null for a real host (no namespace to look at). */
  namespaceExists: boolean | null;
  /** The interface is administratively up and has carrier; null when unknown. */
  interfaceUp: boolean | null;
  agent: AgentState;
  /** A real host's agent: what it said of itself (its backend's room for clones, the clones it runs), or why it did not. */
  hello?: AgentHello;
  problem?: string;
  /** VMs this machine's run directories show on the host: parents and clones. */
  vms: string[];
}

export interface ClusterStatus {
  cluster: string;
  bridge: string | null;
  switchNamespace: string | null;
  bridgeUp: boolean | null;
  mtu: number;
  hosts: HostStatus[];
}

/**
 * What is actually there for an inventory. Agents count as "listening" when some process
 * listens on agentPort inside the host's namespace; real hosts are never probed from here.
 */
/** A real host's agent, by a signed hello (there is no namespace to look into). */
async function greet(inventory: Inventory, host: InventoryHost): Promise<Pick<HostStatus, "agent" | "hello" | "problem">> {
  const target = { host: host.name, address: host.address, port: host.agentPort };
  try {
    const hello = (await agentRequest(target, inventory.secret, "hello", null, HELLO_TIMEOUT_MS)) as AgentHello;
    return { agent: "answering", hello };
  } catch (error) {
    return { agent: "not answering", problem: (error as Error).message };
  }
}

export async function clusterStatus(inventory: Inventory): Promise<ClusterStatus> {
  const namespaces = new Set(await listNamespaces());
  const switchNamespace = inventory.bridge ? `${inventory.cluster}-switch` : null;
  let bridgeUp: boolean | null = null;
  if (inventory.bridge && switchNamespace) {
    const info = namespaces.has(switchNamespace) ? await linkInfo(switchNamespace, inventory.bridge) : undefined;
    bridgeUp = info ? info.flags.includes("UP") : false;
  }
  const records = listVms();
  const vmsOn = (host: InventoryHost) => records.filter((r) => r.host === host.name).map((r) => r.name);
  const hosts = await Promise.all(
    inventory.hosts.map(async (host): Promise<HostStatus> => {
      const vms = vmsOn(host);
      if (host.namespace === null) return { ...host, namespaceExists: null, interfaceUp: null, vms, ...(await greet(inventory, host)) };
      if (!namespaces.has(host.namespace)) return { ...host, namespaceExists: false, interfaceUp: false, agent: "not started", vms };
      const info = await linkInfo(host.namespace, host.interface);
      const interfaceUp = !!info && info.flags.includes("UP") && info.flags.includes("LOWER_UP");
      const agent: AgentState = (await listensInside(host.namespace, host.agentPort)) ? "listening" : "not started";
      return { ...host, namespaceExists: true, interfaceUp, agent, vms };
    }),
  );
  return { cluster: inventory.cluster, bridge: inventory.bridge, switchNamespace, bridgeUp, mtu: inventory.mtu, hosts };
}
