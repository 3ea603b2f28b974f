/** `snowflock fork NAME --clones N [--cluster]`: clone a running VM, on this host or over its cluster (or a Xen domU). */
import type { CAC } from "cac";
import type { DomainOperations } from "../backend/backend.ts";
import { selectBackend } from "../backend/select.ts";
import { forkDomain } from "../clone/domain-fork.ts";
import { forkThroughAgent } from "../cluster/agent-socket.ts";
import { forkDomainAcross } from "../cluster/domain-spread.ts";
import type { ForkResult } from "../clone/fork-result.ts";
import { SnowflockError } from "../errors.ts";
import { formatSize } from "../size.ts";
import { controlRequest } from "../vmm/control-client.ts";
import { MAX_CLONES_PER_FORK } from "../vmm/protocol.ts";
import { checkName, runDir } from "../run-dir.ts";
import { scaledTimeout } from "../timeouts.ts";
import { clusterOfThisHost } from "./cluster-option.ts";
import { memoryPathOption, transportOption } from "./options.ts";
import { log, printJson, printTable } from "../output.ts";

interface ForkOptions {
  clones: number;
  inventory?: string;
  memory?: string;
  cluster?: boolean;
  transport?: string;
  json?: boolean;
  backend?: string;
}

/** A VM snowflock runs: its VMM forks it (on this host or over its cluster). */
async function forkVm(rawName: string, clones: number, options: ForkOptions): Promise<ForkResult> {
  const name = checkName(rawName);
  const memory = memoryPathOption(options.memory ?? "cow");
  if (!options.json) log.start(`forking ${name} into ${clones} clone${clones > 1 ? "s" : ""}`);
  const request = {
    op: "fork" as const,
    clones,
    memory,
    spread: options.cluster === true,
    transport: options.transport === undefined ? undefined : transportOption(options.transport),
  };
  const answer = await controlRequest(name, request, scaledTimeout(60_000));
  if (!answer.ok) throw new SnowflockError("CONTROL", `VM '${name}' could not fork: ${answer.error}`);
  return answer.fork!;
}

/** A domain the hypervisor runs (a Xen domU): snowflock forks it from here. */
function forkDomainNamed(domains: DomainOperations, name: string, clones: number, options: ForkOptions): Promise<ForkResult> {
  domains.checkMemory(options.memory);
  if (clones > domains.maxClones)
    throw new SnowflockError("USAGE", `bad --clones '${clones}'`, `give a whole number from 1 to ${domains.maxClones}`);
  const progress = options.json ? undefined : (line: string) => log.info(line);
  if (options.cluster) {
    if (options.memory === "ondemand")
      throw new SnowflockError(
        "USAGE",
        "`snowflock fork --cluster` on Xen gives the clones their memory eagerly (a copy up front)",
        "leave out --memory; a domU's own `sf clone` spreads clones with memory on demand (the agents' --memory ondemand)",
      );
    const transport = options.transport === undefined ? undefined : transportOption(options.transport);
    return forkDomainAcross(domains, clusterOfThisHost(options.inventory), name, clones, { workDirectory: runDir(), progress, transport });
  }
  // Clones with memory on demand live on with their pagers: the agent forks them and keeps them.
  if (options.memory === "ondemand") return forkThroughAgent(runDir(), name, clones, "ondemand");
  return forkDomain(domains, name, clones, { workDirectory: runDir(), progress });
}

function printFork(result: ForkResult): void {
  const hosts = result.clones.some((c) => c.host !== undefined);
  const domains = result.clones.some((c) => c.domid !== undefined);
  printTable(
    ["CLONE", "ID", ...(hosts ? ["HOST"] : []), domains ? "DOMID" : "PID", ...(domains ? ["MAC"] : []), "READY", "RESTORED", "RUNNING"],
    result.clones.map((c) => [
      c.name,
      String(c.cloneId),
      ...(hosts ? [c.host ?? "-"] : []),
      String((domains ? c.domid : c.pid) ?? "-"),
      ...(domains ? [c.mac ?? "-"] : []),
      `${c.readyMs.toFixed(1)} ms`,
      `${c.restoredMs.toFixed(1)} ms`,
      `${c.runningMs.toFixed(1)} ms`,
    ]),
  );
  const copy = result.eagerCopy;
  const memory = copy
    ? `memory: eager, ${formatSize(copy.bytesCopied)} copied, ${copy.pagesZero} of ${copy.pagesCopied} ` +
      `pages zero (shells ${(copy.shellsMs / 1000).toFixed(2)} s on ${copy.threads} thread(s), copy ` +
      `${(copy.copyMs / 1000).toFixed(2)} s)`
    : `memory: ${result.memory}, descriptor ${result.descriptorBytes} bytes`;
  const ready = result.shellsReady ? `; ${result.shellsReady} from ready shells` : "";
  const served = result.memoryServer
    ? `; ${formatSize(result.memoryServer.bytesSent)} sent to ${result.memoryServer.clients} other host(s)`
    : "";
  log.success(
    `${result.clones.length} clone(s) of ${result.parent} running in ${result.totalMs.toFixed(1)} ms; ` +
      `parent paused ${result.pausedMs.toFixed(2)} ms; ${memory}${ready}${served}`,
  );
}

export function registerFork(cli: CAC): void {
  cli
    .command("fork <name>", "Clone a running VM into N new VMs that carry on from the same instant")
    .option("--clones <n>", "How many clones", { default: 1 })
    .option(
      "--memory <path>",
      "How clones get memory: cow (copy-on-write of the frozen image; the default) or ondemand (each page " +
        "fetched on first touch: from the frozen image on this host, from the parent's memory server on another); on Xen: eager",
    )
    .option(
      "--cluster",
      "Spread the clones over the cluster the VM was started in (`run --cluster`); clones on other hosts take memory on demand. " +
        "On Xen: over the inventory's dom0s, whose agents copy the parent's memory once per host",
    )
    .option("--inventory <file>", "With --cluster on Xen: the cluster's inventory (default: $SNOWFLOCK_RUN_DIR/cluster.json)")
    .option(
      "--transport <kind>",
      "With --cluster: packet or udp (mcdist multicast) or tcp (unicast); default: what the VM was started with (on Xen: tcp)",
    )
    .option("--json", "Print the fork's result as JSON (the same shape on every backend; see the README)")
    .example((bin) => `  ${bin} run serve --name web --detach && ${bin} fork web --clones 4 && ${bin} logs web.2`)
    .example((bin) => `  ${bin} fork mydomu --clones 3 --backend xen     # in a Xen dom0 (a PVH domU)`)
    .example((bin) => `  ${bin} fork mydomu --clones 4 --cluster --inventory /etc/snowflock/cluster.json     # over the dom0s' agents`)
    .action(async (rawName: string, options: ForkOptions) => {
      const clones = Number(options.clones);
      if (!Number.isInteger(clones) || clones < 1 || clones > MAX_CLONES_PER_FORK) {
        throw new SnowflockError("USAGE", `bad --clones '${options.clones}'`, `give a whole number from 1 to ${MAX_CLONES_PER_FORK}`);
      }
      const backend = await selectBackend(options.backend, "fork");
      const result = backend.domains
        ? await forkDomainNamed(backend.domains, String(rawName), clones, options)
        : await forkVm(String(rawName), clones, options);
      if (options.json) printJson(result);
      else printFork(result);
      for (const f of result.failed) log.error(`${f.name}: ${f.error}`);
      return result.failed.length > 0 ? 1 : 0;
    });
}
