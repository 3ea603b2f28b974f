/** `snowflock kill NAME`: stop a running VM and its clones, one clone, or only the clones. */
import type { CAC } from "cac";
import { SnowflockError } from "../errors.ts";
import { controlRequest } from "../vmm/control-client.ts";
import { checkName, descendants, listVms, removeVmFiles, signalProcess, vmAlive, type VmRecord } from "../run-dir.ts";
import { selectBackend } from "../backend/select.ts";
import type { DomainListing, DomainOperations } from "../backend/backend.ts";
import { END_CLONES_TIMEOUT_MS, type FamilyEvent, type FamilyEventAnswer } from "../cluster/family-event.ts";
import { clusterOfThisHost } from "./cluster-option.ts";
import { log, printJson } from "../output.ts";
import { scaledTimeout } from "../timeouts.ts";

const STOP_TIMEOUT_MS = scaledTimeout(5000);

/**
 * Asks the VMM to stop; signals it if it does not answer or does not stop in time. Before each
 * signal the PID is checked to still be the VMM's (its start time), never a process that reused it.
 */
async function stopVm(record: VmRecord): Promise<string> {
  const answer = await controlRequest(record.name, "kill").catch(() => undefined);
  if (!answer?.ok && vmAlive(record)) signalProcess(record.pid, "SIGTERM");
  const deadline = Date.now() + STOP_TIMEOUT_MS;
  while (vmAlive(record) && Date.now() < deadline) await Bun.sleep(20);
  if (!vmAlive(record)) return "stopped";
  signalProcess(record.pid, "SIGKILL");
  removeVmFiles(record.name, { keepLog: true });
  return "killed (it did not stop in time)";
}

export function registerKill(cli: CAC): void {
  cli
    .command("kill <name>", "Stop a running VM and its clones (NAME.i: one clone)")
    .option("--clones", "Stop only the VM's clones; leave it running")
    .option("--cluster", "On Xen: also end the domU's clones on the cluster's other dom0s (through their agents)")
    .option("--inventory <file>", "With --cluster: the cluster's inventory (default: $SNOWFLOCK_RUN_DIR/cluster.json)")
    .option("--json", "Print the result as JSON")
    .example((bin) => `  ${bin} kill web --clones`)
    .example((bin) => `  ${bin} kill mydomu --cluster     # a Xen domU and its clones on every dom0`)
    .action(async (rawName: string, options: KillOptions) => {
      const { domains } = await selectBackend(options.backend, "kill");
      if (domains) {
        const ended = await killDomains(domains, String(rawName), options);
        if (options.json) return printJson(ended);
        return log.success(`destroyed ${ended.map((d) => (d.host ? `${d.name} (on ${d.host})` : d.name)).join(", ")}`);
      }
      const name = checkName(String(rawName));
      const running = listVms();
      const record = running.find((r) => r.name === name);
      if (!record) {
        removeVmFiles(name, { keepLog: true });
        throw new SnowflockError("NOT_FOUND", `no running VM named '${name}'`, "`snowflock ls` lists the running VMs");
      }
      const family = descendants(running, name);
      const targets = options.clones ? family : [...family, record];
      if (options.clones && family.length === 0) throw new SnowflockError("NOT_FOUND", `VM '${name}' has no running clones`);
      const results = await Promise.all(targets.map(async (r) => ({ name: r.name, pid: r.pid, result: await stopVm(r) })));
      if (options.json) return printJson(results);
      for (const r of results) log.success(`${r.name} ${r.result}`);
    });
}

interface KillOptions {
  clones?: boolean;
  json?: boolean;
  backend?: string;
  cluster?: boolean;
  inventory?: string;
}

/**
 * Ends a domU (or only its clones) here, and with --cluster its clones on the other dom0s too:
 * each host's agent ends the clones whose family keys name this host and the parent's domid.
 */
async function killDomains(
  domains: DomainOperations,
  name: string,
  options: KillOptions,
): Promise<Array<{ name: string; domid?: number; host?: string; result: string }>> {
  const cluster = options.cluster ? clusterOfThisHost(options.inventory) : undefined;
  const parent = cluster && (await domains.list()).find((d) => d.name === name && d.cloneId === 0);
  let here: DomainListing[] = [];
  try {
    here = await domains.kill(name, options);
  } catch (error) {
    // Only clones on other hosts: nothing to end here.
    if (!(parent && options.clones && error instanceof SnowflockError && error.code === "NOT_FOUND")) throw error;
  }
  const results: Array<{ name: string; domid?: number; host?: string; result: string }> = here.map((d) => ({
    name: d.name,
    domid: d.id,
    result: "destroyed",
  }));
  if (!cluster || !parent) return results;
  const event: FamilyEvent = { event: "end-family", parentHost: cluster.host.name, parentDomain: parent.id };
  for (const host of cluster.inventory.hosts.filter((h) => h.name !== cluster.host.name)) {
    try {
      const answer = (await cluster.agentCall(host, "family", event, END_CLONES_TIMEOUT_MS)) as FamilyEventAnswer;
      for (const clone of answer.ended ?? []) results.push({ name: clone, host: host.name, result: "destroyed" });
    } catch (error) {
      log.warn(`host ${host.name} did not answer (${(error as Error).message}): clones of ${name} may still run there`);
    }
  }
  return results;
}
