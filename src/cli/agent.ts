/** `snowflock agent --host NAME`: the per-host agent, started by `cluster up` or by an operator. */
import type { CAC } from "cac";
import { SnowflockError } from "../errors.ts";
import { type Agent, startAgent } from "../cluster/agent.ts";
import { ClusterContext } from "../cluster/cluster-context.ts";
import { type DomainGuests, serveDomainGuests } from "../cluster/domain-guests.ts";
import { serveAgentSocket } from "../cluster/agent-socket.ts";
import { defaultInventoryPath, readInventory } from "../cluster/inventory.ts";
import type { Backend, DomainOperations } from "../backend/backend.ts";
import { selectBackend } from "../backend/select.ts";
import { ensureRunDir, runDir } from "../run-dir.ts";
import { log } from "../output.ts";
import { transportOption } from "./options.ts";
import { DEFAULT_POOL_SETTINGS, MAX_POOL_SIZE, PoolKeeper } from "../pool/keeper.ts";
import { serveKeeper } from "../pool/keeper-process.ts";

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
    .option("--pool <n>", "On KVM: VMM processes to keep ready for clone orders, so a remote clone starts no process (default 0)")
    .option(
      "--memory <mode>",
      "In a Xen dom0, how the domUs' clones get memory: eager (a copy up front) or ondemand (paged in by a pager; a Xen built " +
        "with paging). Default: ondemand where Xen pages, else eager",
    )
    .option(
      "--transport <kind>",
      "In a Xen dom0 with --host: how other hosts fetch the memory of the domUs' clones placed there: tcp (the default), " +
        "packet or udp (mcdist multicast: each page once for all hosts)",
    )
    .example((bin) => `  ${bin} agent --inventory /etc/snowflock/cluster.json --host h3`)
    .example((bin) => `  ${bin} agent --backend xen     # in a Xen dom0: serve the sf tool of every domU`)
    .action(async (options: AgentOptions) => {
      const backend = await selectBackend(options.backend, "agent");
      // One agent per host: in a dom0 it serves the domUs' sf requests, and with --host the cluster's control plane as well.
      const domains = backend.domains;
      const cluster = options.host !== undefined || !domains ? clusterOfAgent(options) : undefined;
      let guests: DomainGuests | undefined;
      let operator: { close(): void } | undefined;
      if (domains) {
        const memory = guestMemory(domains, options.memory);
        const transport = options.transport === undefined ? undefined : transportOption(options.transport);
        guests = serveDomainGuests(domains, { workDirectory: runDir(), log: (line) => log.info(line), memory, cluster, transport });
        operator = serveAgentSocket(domains, ensureRunDir(), (line) => log.info(line));
        log.success(
          `${backend.name} agent serving the domUs' sf requests (guest/linux); their clones' memory: ${memory}` +
            (cluster
              ? `; their families spread over ${cluster.inventory.hosts.length} host(s) (memory by ${options.transport ?? "tcp"})`
              : ""),
        );
      }
      const control = cluster && startControlPlane(options, backend, cluster, guests);
      const pool = domains ? undefined : keepPool(options.pool, cluster?.host.interface);
      await untilStopped();
      pool?.close();
      operator?.close();
      await guests?.stop();
      control?.stop();
      return 0;
    });
}

/**
 * The agent's own pool of ready VMMs (pool/), on the host's keeper socket like the pool daemon's.
 * Each makes its mcdist packet socket and ring on the cluster interface ahead, for clones over packet.
 * Served even at size 0: `snowflock pool --clones N` for this host then resizes it here, in the
 * agent's network namespace, instead of starting a pool daemon wherever the command ran.
 */
function keepPool(value: number | string | undefined, packetInterface: string | undefined): { close(): void } {
  const size = Number(value ?? 0);
  if (!Number.isInteger(size) || size < 0 || size > MAX_POOL_SIZE)
    throw new SnowflockError("USAGE", `bad --pool '${value}'`, `give a whole number from 0 to ${MAX_POOL_SIZE}`);
  const dir = ensureRunDir();
  const served = serveKeeper(dir, new PoolKeeper(dir, { ...DEFAULT_POOL_SETTINGS, size, packetInterface }), { stopEmpties: true });
  if (size > 0) log.info(`keeping ${size} ready VMM(s) for clone orders`);
  return served;
}

interface AgentOptions {
  pool?: number | string;
  host?: string;
  inventory?: string;
  maxClones: number | string;
  backend?: string;
  memory?: string;
  transport?: string;
}

/** The memory mode asked for (refused where the hypervisor cannot), else ondemand where it pages. */
function guestMemory(domains: DomainOperations, asked: string | undefined): "eager" | "ondemand" {
  if (asked !== undefined) {
    domains.checkMemory(asked);
    return asked === "ondemand" ? "ondemand" : "eager";
  }
  try {
    domains.checkMemory("ondemand");
    return "ondemand";
  } catch {
    return "eager";
  }
}

/** The cluster this agent's host belongs to (--host in --inventory). */
function clusterOfAgent(options: AgentOptions): ClusterContext {
  const path = options.inventory ?? defaultInventoryPath();
  const inventory = readInventory(path);
  if (!inventory.hosts.some((h) => h.name === String(options.host))) {
    throw new SnowflockError(
      "USAGE",
      `no host '${options.host ?? ""}' in ${path}`,
      `use --host with one of: ${inventory.hosts.map((h) => h.name).join(", ")}`,
    );
  }
  return ClusterContext.load(path, String(options.host));
}

function startControlPlane(options: AgentOptions, backend: Backend, cluster: ClusterContext, guests: DomainGuests | undefined): Agent {
  const maxClones = Number(options.maxClones);
  if (!Number.isInteger(maxClones) || maxClones < 1 || maxClones > 1024)
    throw new SnowflockError("USAGE", `bad --max-clones '${options.maxClones}'`, "give a whole number from 1 to 1024");
  const agent = startAgent({
    cluster,
    backend: backend.name,
    maxClones,
    domains: backend.domains,
    familyEvents: guests?.familyEvent,
    log: (line) => log.info(line),
  });
  log.success(`agent for ${cluster.host.name} listening on ${cluster.host.address}:${agent.port} (up to ${maxClones} clones)`);
  return agent;
}
