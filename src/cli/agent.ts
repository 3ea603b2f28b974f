/** `snowflock agent --host NAME`: the per-host agent, started by `cluster up` or by an operator. */
import type { CAC } from "cac";
import { SnowflockError } from "../errors.ts";
import { startAgent } from "../cluster/agent.ts";
import { ClusterContext } from "../cluster/cluster-context.ts";
import { serveDomainGuests } from "../cluster/domain-guests.ts";
import { defaultInventoryPath, readInventory } from "../cluster/inventory.ts";
import { selectBackend } from "../backend/select.ts";
import { runDir } from "../vmm/run-dir.ts";
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
      "Run this host's agent: it takes authenticated requests from the cluster, starts clones here and relays their messages; on Xen, it serves the domUs' sf requests (runs until stopped)",
    )
    .option("--host <name>", "Which inventory host this is")
    .option("--inventory <file>", "The cluster's inventory (default: $SNOWFLOCK_RUN_DIR/cluster.json)")
    .option("--max-clones <n>", "Most clones this host runs at once", { default: DEFAULT_AGENT_MAX_CLONES })
    .example((bin) => `  ${bin} agent --inventory /etc/snowflock/cluster.json --host h3`)
    .example((bin) => `  ${bin} agent --backend xen     # in a Xen dom0: serve the sf tool of every domU`)
    .action(async (options: { host?: string; inventory?: string; maxClones: number | string; backend?: string }) => {
      const { domains } = await selectBackend(options.backend, "agent");
      if (domains) {
        const guests = serveDomainGuests(domains, { workDirectory: runDir(), log: (line) => log.info(line) });
        log.success("Xen agent running: domUs can use sf (guest/xen) now");
        await untilStopped();
        guests.stop();
        return 0;
      }
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
      const agent = startAgent({ cluster, maxClones });
      log.success(`agent for ${cluster.host.name} listening on ${cluster.host.address}:${agent.port} (up to ${maxClones} clones)`);
      await untilStopped();
      agent.stop();
      return 0;
    });
}
