/** `snowflock kill NAME`: stop a running VM and its clones, one clone, or only the clones. */
import type { CAC } from "cac";
import { SnowflockError } from "../errors.ts";
import { controlRequest } from "../vmm/control-client.ts";
import { checkName, descendants, listVms, removeVmFiles, vmAlive, type VmRecord } from "../run-dir.ts";
import { selectBackend } from "../backend/select.ts";
import { log, printJson } from "../output.ts";
import { scaledTimeout } from "../timeouts.ts";

const STOP_TIMEOUT_MS = scaledTimeout(5000);

/**
 * Asks the VMM to stop; signals it if it does not answer or does not stop in time. Before each
 * signal the PID is checked to still be the VMM's (its start time), never a process that reused it.
 */
async function stopVm(record: VmRecord): Promise<string> {
  const answer = await controlRequest(record.name, "kill").catch(() => undefined);
  if (!answer?.ok && vmAlive(record)) process.kill(record.pid, "SIGTERM");
  const deadline = Date.now() + STOP_TIMEOUT_MS;
  while (vmAlive(record) && Date.now() < deadline) await Bun.sleep(20);
  if (!vmAlive(record)) return "stopped";
  process.kill(record.pid, "SIGKILL");
  removeVmFiles(record.name, { keepLog: true });
  return "killed (it did not stop in time)";
}

export function registerKill(cli: CAC): void {
  cli
    .command("kill <name>", "Stop a running VM and its clones (NAME.i: one clone)")
    .option("--clones", "Stop only the VM's clones; leave it running")
    .option("--json", "Print the result as JSON")
    .example((bin) => `  ${bin} kill web --clones`)
    .action(async (rawName: string, options: { clones?: boolean; json?: boolean; backend?: string }) => {
      const { domains } = await selectBackend(options.backend, "kill");
      if (domains) {
        const ended = await domains.kill(String(rawName), options);
        if (options.json) return printJson(ended.map((d) => ({ name: d.name, domid: d.id, result: "destroyed" })));
        return log.success(`destroyed ${ended.map((d) => d.name).join(", ")}`);
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
