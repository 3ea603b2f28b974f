/**
 * `--cluster [INVENTORY]` on `run`: the VM runs on a host of the inventory and spreads its clones
 * over the cluster. On test hosts the VM must run inside a host's network namespace; a command
 * started outside every one of them runs itself again inside the first host's.
 */
import { resolve } from "node:path";
import { SnowflockError } from "../errors.ts";
import { ClusterContext, hostOfThisProcess } from "../cluster/cluster-context.ts";
import { defaultInventoryPath, readInventory } from "../cluster/inventory.ts";
import { selfCommand } from "../vmm/self.ts";
import { hostRunDir } from "../cluster/test-agents.ts";

const INSIDE_TEST_HOST = "SNOWFLOCK_INSIDE_TEST_HOST";

export type ClusterChoice = { cluster: ClusterContext } | { rerunInside: string; runDir: string; inventoryPath: string };

export function chooseCluster(option: string | boolean): ClusterChoice {
  const inventoryPath = resolve(typeof option === "string" && option !== "" ? option : defaultInventoryPath());
  const inventory = readInventory(inventoryPath);
  const host = hostOfThisProcess(inventory);
  if (host) return { cluster: ClusterContext.load(inventoryPath, host.name) };
  const first = inventory.hosts[0]!;
  if (first.namespace !== null && process.env[INSIDE_TEST_HOST] !== "1")
    return { rerunInside: first.namespace, runDir: hostRunDir(inventory.cluster, first.name), inventoryPath };
  throw new SnowflockError(
    "USAGE",
    `this machine is none of the hosts in ${inventoryPath}`,
    first.namespace === null
      ? "run it on a host the inventory names (its address must be one of this machine's)"
      : `the test host namespace ${first.namespace} is not usable; run \`snowflock cluster status\``,
  );
}

/** Runs this same command again inside a test host's namespace, with its run directory; resolves to its exit status. */
export async function rerunInside(namespace: string, runDir: string, args: string[]): Promise<number> {
  const child = Bun.spawn(["ip", "netns", "exec", namespace, ...selfCommand(), ...args], {
    stdio: ["inherit", "inherit", "inherit"],
    env: { ...process.env, [INSIDE_TEST_HOST]: "1", SNOWFLOCK_RUN_DIR: runDir },
  });
  const forward = (signal: NodeJS.Signals) => child.kill(signal);
  process.on("SIGINT", forward);
  process.on("SIGTERM", forward);
  try {
    return await child.exited;
  } finally {
    process.off("SIGINT", forward);
    process.off("SIGTERM", forward);
  }
}

/** `args` without `--option`, `--option=VALUE` or `--option VALUE` (where VALUE is what cac parsed). */
export function withoutOption(args: string[], option: string, value: unknown): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg.startsWith(`${option}=`)) continue;
    if (arg === option) {
      if (typeof value === "string" && args[i + 1] === value) i++;
      continue;
    }
    out.push(arg);
  }
  return out;
}

/** The cluster this host is part of: the inventory's host whose address an interface here has. */
export function clusterOfThisHost(inventoryOption: string | undefined): ClusterContext {
  const path = inventoryOption ?? defaultInventoryPath();
  const inventory = readInventory(path);
  const host = hostOfThisProcess(inventory);
  if (!host)
    throw new SnowflockError(
      "USAGE",
      `no host of the inventory ${path} has an address of this machine (${inventory.hosts.map((h) => `${h.name} ${h.address}`).join(", ")})`,
      "run the fork on one of the cluster's hosts, or pass its inventory with --inventory",
    );
  return ClusterContext.load(path, host.name);
}
