/**
 * `snowflock cluster up|down|status`: test hosts on this machine — network namespaces joined by
 * veth pairs to a bridge (in a namespace of its own), each with the cluster's inventory entry.
 */
import type { CAC } from "cac";
import { existsSync } from "node:fs";
import { SnowflockError } from "../errors.ts";
import { type Inventory, defaultInventoryPath, readInventory } from "../cluster/inventory.ts";
import {
  DEFAULT_PREFIX,
  MAX_TEST_HOSTS,
  TEST_HOST_MTU,
  TEST_SUBNET,
  checkPrefix,
  clusterStatus,
  clusterUp,
  destroyTestHosts,
  existingClusterPrefixes,
  testHostNames,
} from "../cluster/test-hosts.ts";
import { log, printJson, printTable } from "../output.ts";
import { DEFAULT_AGENT_MAX_CLONES } from "./agent.ts";
import { MAX_POOL_SIZE } from "../pool/keeper.ts";
import type { TestAgentSettings } from "../cluster/test-agents.ts";

export interface ClusterHooks {
  /** Starts one agent per host of a new cluster (wired in by the agent code); `up` calls it if given. */
  startAgents?: (inventory: Inventory, inventoryPath: string, settings: TestAgentSettings) => Promise<void> | void;
}

interface ClusterOptions {
  hosts?: number | string;
  mtu?: number | string;
  maxClones?: number | string;
  pool?: number | string;
  prefix?: string;
  inventory?: string;
  json?: boolean;
}

const DESCRIPTION =
  `Test hosts on this machine: 'up' creates N network namespaces (PREFIX-h1..N), each with an eth0 at ` +
  `10.77.0.(10+i)/24 joined by a veth pair to the bridge PREFIXbr0 inside the namespace PREFIX-switch, ` +
  `and writes the cluster inventory (hosts, addresses, MACs, agent ports, the cluster secret; mode ` +
  `0600). All traffic stays between the namespaces; nothing is added to this machine's own network. ` +
  `'status' shows what exists and flags agents that are not running (of an inventory's real hosts, such as ` +
  `Xen dom0s: whether each agent answers a signed hello, its backend and clones); 'restart-agents' starts those ` +
  `again; 'down' removes every namespace, link and process of the inventory's cluster and the inventory ` +
  `(after a crash, with no inventory left: name the cluster with --prefix). Needs root.`;

export function registerCluster(cli: CAC, hooks: ClusterHooks = {}): void {
  cli
    .command("cluster <action>", DESCRIPTION)
    .usage(
      "cluster up --hosts N [--mtu 9000] [--max-clones 16] [--prefix sf] [--inventory FILE] [--json] | " +
        "cluster down [--inventory FILE] [--prefix P] [--json] | cluster status [--inventory FILE] [--json] | " +
        "cluster restart-agents [--inventory FILE] [--max-clones 16]",
    )
    .option("--hosts <n>", `up: how many test hosts (1 to ${MAX_TEST_HOSTS})`)
    .option("--mtu <bytes>", `up: MTU of every eth0, veth end and the bridge (default ${TEST_HOST_MTU})`)
    .option("--max-clones <n>", `up/restart-agents: most clones each host's agent runs at once (default ${DEFAULT_AGENT_MAX_CLONES})`)
    .option("--pool <n>", "up/restart-agents: ready VMMs each host's agent keeps for clone orders (default 0: none)")
    .option(
      "--prefix <name>",
      `up/down: prefix of the namespaces and links (up: default ${DEFAULT_PREFIX}; down takes it from the inventory unless given)`,
    )
    .option("--inventory <file>", `The cluster inventory (default ${defaultInventoryPath()})`)
    .option("--json", "Print the result as JSON")
    .example((bin) => `  ${bin} cluster up --hosts 4 --mtu 9000 && ${bin} cluster status && ${bin} cluster down`)
    .action(async (action: string, options: ClusterOptions) => {
      switch (action) {
        case "up":
          return up(options, hooks);
        case "down":
          return down(options);
        case "status":
          return status(options);
        case "restart-agents":
          return restartAgents(options);
        default:
          throw new SnowflockError(
            "USAGE",
            `unknown cluster action '${action}'`,
            "use `snowflock cluster up|down|status|restart-agents` (see --help)",
          );
      }
    });
}

function wholeNumber(value: number | string | undefined, option: string, fallback?: number): number {
  if (value === undefined && fallback !== undefined) return fallback;
  const n = Number(value);
  if (value === undefined || value === "" || typeof value === "boolean" || !Number.isInteger(n)) {
    throw new SnowflockError(
      "USAGE",
      value === undefined ? `${option} is required` : `bad ${option} '${value}'`,
      `give a whole number, e.g. ${option} ${option === "--mtu" ? 1500 : 3}`,
    );
  }
  return n;
}

function poolOption(options: ClusterOptions): number {
  const pool = wholeNumber(options.pool, "--pool", 0);
  if (pool < 0 || pool > MAX_POOL_SIZE)
    throw new SnowflockError("USAGE", `bad --pool '${pool}'`, `give a whole number from 0 to ${MAX_POOL_SIZE}`);
  return pool;
}

function maxClonesOption(options: ClusterOptions): number {
  const maxClones = wholeNumber(options.maxClones, "--max-clones", DEFAULT_AGENT_MAX_CLONES);
  if (maxClones < 1 || maxClones > 1024) {
    throw new SnowflockError("USAGE", `bad --max-clones '${maxClones}'`, "give a whole number from 1 to 1024");
  }
  return maxClones;
}

async function up(options: ClusterOptions, hooks: ClusterHooks): Promise<number> {
  const hosts = wholeNumber(options.hosts, "--hosts");
  const mtu = wholeNumber(options.mtu, "--mtu", TEST_HOST_MTU);
  const maxClones = maxClonesOption(options);
  const pool = poolOption(options);
  const prefix = checkPrefix(options.prefix === undefined ? DEFAULT_PREFIX : String(options.prefix));
  const inventoryPath = options.inventory ? String(options.inventory) : defaultInventoryPath();
  if (!options.json) log.start(`creating ${hosts} test host${hosts > 1 ? "s" : ""} '${prefix}' on ${TEST_SUBNET}, MTU ${mtu}`);
  const inventory = await clusterUp({
    hosts,
    mtu,
    prefix,
    inventoryPath,
    startAgents: hooks.startAgents && ((inventory, path) => hooks.startAgents!(inventory, path, { maxClones, pool })),
    onHost: (host) => {
      if (!options.json) log.success(`${host.name}: namespace ${host.namespace}, ${host.interface} ${host.address}/24, mac ${host.mac}`);
    },
  });
  if (options.json) printJson(publicView(inventory, inventoryPath));
  else
    log.success(
      `${inventory.hosts.length} test host(s) up on bridge ${inventory.bridge} (namespace ` +
        `${testHostNames(prefix).switchNamespace}); inventory ${inventoryPath}`,
    );
  return 0;
}

/** The inventory without its secret, for stdout. */
function publicView(inventory: Inventory, inventoryPath: string) {
  const { secret: _secret, ...rest } = inventory;
  return { inventory: inventoryPath, switchNamespace: inventory.bridge ? `${inventory.cluster}-switch` : null, ...rest };
}

/**
 * `down` removes what it is told to, never a guess: the cluster of an inventory that exists, or
 * the one --prefix names. A missing or mistyped inventory is an error that says what exists.
 */
async function down(options: ClusterOptions): Promise<number> {
  const inventoryPath = options.inventory ? String(options.inventory) : defaultInventoryPath();
  let prefix: string;
  if (options.prefix !== undefined) prefix = checkPrefix(String(options.prefix));
  else if (!existsSync(inventoryPath)) {
    const prefixes = await existingClusterPrefixes();
    const there = prefixes.length > 0 ? `test clusters here: ${prefixes.join(", ")}` : "no test cluster exists here";
    throw new SnowflockError(
      "NOT_FOUND",
      `no cluster inventory at ${inventoryPath}; nothing removed (${there})`,
      "pass the inventory `cluster up` wrote (--inventory FILE), or name the cluster to remove with --prefix P",
    );
  } else {
    let inventory: Inventory;
    try {
      inventory = readInventory(inventoryPath);
    } catch (error) {
      if (error instanceof SnowflockError)
        throw new SnowflockError(
          error.code,
          error.message,
          "to remove test hosts by name anyway, pass --prefix P; the file is then left in place",
          { cause: error },
        );
      throw error;
    }
    if (inventory.hosts.every((h) => h.namespace === null)) {
      throw new SnowflockError(
        "USAGE",
        `the inventory ${inventoryPath} describes real hosts (cluster '${inventory.cluster}'); there are no test hosts to remove`,
        "`cluster down` only removes test hosts made by `cluster up`",
      );
    }
    prefix = checkPrefix(inventory.cluster);
  }

  const report = await destroyTestHosts(prefix, { inventoryPath });
  if (options.json) {
    printJson(report);
    return 0;
  }
  if (report.processes.length > 0)
    log.info(`ended ${report.processes.length} process(es) inside the namespaces: ${report.processes.join(" ")}`);
  if (report.links.length > 0) log.info(`removed link(s): ${report.links.join(" ")}`);
  if (report.namespaces.length > 0) log.info(`removed namespace(s): ${report.namespaces.join(" ")}`);
  if (report.runDirs.length > 0) log.info(`removed run director${report.runDirs.length > 1 ? "ies" : "y"}: ${report.runDirs.join(" ")}`);
  if (report.inventory) log.info(`removed inventory ${report.inventory}`);
  if (report.inventoryKept) log.warn(report.inventoryKept);
  const nothing =
    report.processes.length + report.links.length + report.namespaces.length + report.runDirs.length === 0 && !report.inventory;
  if (nothing) log.info(`no test hosts with prefix '${prefix}' found; nothing to remove`);
  else log.success(`test cluster '${prefix}' removed`);
  return 0;
}

async function status(options: ClusterOptions): Promise<number> {
  const inventoryPath = options.inventory ? String(options.inventory) : defaultInventoryPath();
  const inventory = readInventory(inventoryPath);
  const result = await clusterStatus(inventory);
  if (options.json) {
    printJson({ inventory: inventoryPath, ...result });
    return 0;
  }
  const yesNo = (v: boolean | null) => (v === null ? "-" : v ? "yes" : "no");
  printTable(
    ["HOST", "NAMESPACE", "ADDRESS", "MAC", "INTERFACE", "NS EXISTS", "UP", "AGENT", "VMS"],
    result.hosts.map((h) => [
      h.name,
      h.namespace ?? "(real host)",
      h.address,
      h.mac,
      h.interface,
      yesNo(h.namespaceExists),
      yesNo(h.interfaceUp),
      `${h.agent} (:${h.agentPort})${h.hello ? ` ${h.hello.backend} ${h.hello.version}, ${h.hello.clones.length} clone(s)${h.hello.orders?.length ? ` (+${h.hello.orders.length} order(s) starting)` : ""}, ${h.hello.refused} refused` : ""}`,
      h.vms.join(" ") || "-",
    ]),
  );
  if (result.bridge)
    log.info(
      `cluster '${result.cluster}': bridge ${result.bridge} in namespace ${result.switchNamespace} ` +
        `${result.bridgeUp ? "up" : "MISSING or down"}, MTU ${result.mtu}`,
    );
  const broken = result.hosts.filter((h) => h.namespaceExists === false || h.interfaceUp === false);
  if (broken.length > 0) log.warn(`${broken.length} host(s) missing or down: run \`snowflock cluster down\` and \`cluster up\` again`);
  for (const h of result.hosts.filter((h) => h.problem)) log.warn(h.problem);
  const deadAgents = result.hosts.filter((h) => h.namespaceExists === true && h.agent !== "listening");
  if (deadAgents.length > 0) {
    const names = deadAgents.map((h) => h.name).join(", ");
    log.warn(`agent not running on ${names}: \`snowflock cluster restart-agents${inventoryOption(options)}\` starts it again`);
  }
  return 0;
}

/** ` --inventory FILE` when the command was given one, to repeat it in a hint. */
const inventoryOption = (options: ClusterOptions) => (options.inventory ? ` --inventory ${options.inventory}` : "");

/** `restart-agents`: starts the agent of every test host where none runs (the others are left alone). */
async function restartAgents(options: ClusterOptions): Promise<number> {
  const inventoryPath = options.inventory ? String(options.inventory) : defaultInventoryPath();
  const maxClones = maxClonesOption(options);
  const inventory = readInventory(inventoryPath);
  const { restartDeadAgents } = await import("../cluster/test-agents.ts");
  const restarted = await restartDeadAgents(inventory, inventoryPath, { maxClones, pool: poolOption(options) });
  if (options.json) printJson({ restarted: restarted.map((h) => h.name) });
  else if (restarted.length === 0) log.info(`every test host's agent of cluster '${inventory.cluster}' is running; nothing to restart`);
  else log.success(`restarted the agent on ${restarted.map((h) => h.name).join(", ")}`);
  return 0;
}
