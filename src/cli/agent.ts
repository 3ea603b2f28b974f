/** `snowflock agent --host NAME`: the per-host agent, started by `cluster up` or by an operator. */
import type { CAC } from "cac";
import { SnowflockError } from "../errors.ts";
import { type Agent, startAgent } from "../cluster/agent.ts";
import { ClusterContext } from "../cluster/cluster-context.ts";
import { serveDomainGuests } from "../cluster/domain-guests.ts";
import { defaultInventoryPath, readInventory } from "../cluster/inventory.ts";
import type { Backend } from "../backend/backend.ts";
import { selectBackend } from "../backend/select.ts";
import { runDir } from "../run-dir.ts";
import { log } from "../output.ts";

export const DEFAULT_AGENT_MAX_CLONES = 16;

function untilStopped(): Promise<void> {
  return new Promise<void>((resolve) => {
    process.once("SIGTERM", resolve);
    process.once("SIGINT", resolve);
  });
}

export function registerAgent(cli: CAC): void {
  cli
    .command(
      "agent",
      "Run this host's one agent: it takes authenticated requests from the cluster, starts clones here and " +
        "relays their messages; in a Xen dom0 it also serves the domUs' sf requests (runs until stopped)",
    )
    .option("--host <name>", "Which inventory host this is (in a Xen dom0: optional, for the cluster's control plane)")
    .option("--inventory <file>", "The cluster's inventory (default: $SNOWFLOCK_RUN_DIR/cluster.json)")
    .option("--max-clones <n>", "Most clones this host runs at once", { default: DEFAULT_AGENT_MAX_CLONES })
    .example((bin) => `  ${bin} agent --inventory /etc/snowflock/cluster.json --host h3`)
    .example((bin) => `  ${bin} agent --backend xen     # in a Xen dom0: serve the sf tool of every domU`)
    .action(async (options: { host?: string; inventory?: string; maxClones: number | string; backend?: string }) => {
      const backend = await selectBackend(options.backend, "agent");
      // One agent per host: in a dom0 it serves the domUs' sf requests, and with --host the cluster's control plane as well.
      const guests = backend.domains && serveDomainGuests(backend.domains, { workDirectory: runDir(), log: (line) => log.info(line) });
      if (guests) log.success(`${backend.name} agent serving the domUs' sf requests (guest/xen)`);
      const control = options.host !== undefined || !guests ? startControlPlane(options, backend) : undefined;
      await untilStopped();
      guests?.stop();
      control?.stop();
      return 0;
    });
}

function startControlPlane(options: { host?: string; inventory?: string; maxClones: number | string }, backend: Backend): Agent {
  const path = options.inventory ?? defaultInventoryPath();
  const inventory = readInventory(path);
  if (!inventory.hosts.some((h) => h.name === String(options.host))) {
    throw new SnowflockError(
      "USAGE",
      `no host '${options.host ?? ""}' in ${path}`,
      `use --host with one of: ${inventory.hosts.map((h) => h.name).join(", ")}`,
    );
  }
  const maxClones = Number(options.maxClones);
  if (!Number.isInteger(maxClones) || maxClones < 1 || maxClones > 1024)
    throw new SnowflockError("USAGE", `bad --max-clones '${options.maxClones}'`, "give a whole number from 1 to 1024");
  const cluster = ClusterContext.load(path, String(options.host));
  const noClonesBecause = backend.machines ? undefined : `is a ${backend.name} host: it starts no clones for parents on other hosts (yet)`;
  const agent = startAgent({ cluster, maxClones, noClonesBecause });
  log.success(
    `agent for ${cluster.host.name} listening on ${cluster.host.address}:${agent.port} ` +
      `(${noClonesBecause ? "no clones from other hosts" : `up to ${maxClones} clones`})`,
  );
  return agent;
}
