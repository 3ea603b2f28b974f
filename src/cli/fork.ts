/** `snowflock fork NAME --clones N [--cluster]`: clone a running VM, on this host or over its cluster (or a Xen domU). */
import type { CAC } from "cac";
import { SnowflockError } from "../errors.ts";
import { controlRequest } from "../vmm/control-client.ts";
import { MAX_CLONES_PER_FORK } from "../vmm/protocol.ts";
import { checkName } from "../vmm/run-dir.ts";
import { scaledTimeout } from "../timeouts.ts";
import { chosenBackend } from "./backend.ts";
import { memoryPathOption, transportOption } from "./options.ts";
import { log, printJson, printTable } from "../output.ts";

export function registerFork(cli: CAC): void {
  cli
    .command("fork <name>", "Clone a running VM into N new VMs that carry on from the same instant")
    .option("--clones <n>", "How many clones", { default: 1 })
    .option("--memory <path>", "How clones get memory: cow (copy-on-write of the frozen image; the default) or ondemand (fetched on first touch from the parent's memory server); on Xen: eager")
    .option("--cluster", "Spread the clones over the cluster the VM was started in (`run --cluster`); clones on other hosts take memory on demand")
    .option("--transport <kind>", "With --cluster: packet or udp (mcdist multicast) or tcp (unicast); default: what the VM was started with")
    .option("--json", "Print the clones (name, ID, host, time) as JSON")
    .example((bin) => `  ${bin} run serve --name web --detach && ${bin} fork web --clones 4 && ${bin} logs web.2`)
    .example((bin) => `  ${bin} fork mydomu --clones 3 --backend xen     # in a Xen dom0 (a PVH domU)`)
    .action(async (rawName: string, options: { clones: number; memory?: string; cluster?: boolean; transport?: string; json?: boolean; backend?: string }) => {
      const clones = Number(options.clones);
      if (!Number.isInteger(clones) || clones < 1 || clones > MAX_CLONES_PER_FORK) {
        throw new SnowflockError("USAGE", `bad --clones '${options.clones}'`, `give a whole number from 1 to ${MAX_CLONES_PER_FORK}`);
      }
      if ((await chosenBackend(options.backend, "fork")) === "xen") return (await import("./xen.ts")).forkOnXen(String(rawName), clones, options);
      const name = checkName(String(rawName));
      const memory = memoryPathOption(options.memory ?? "cow");
      if (!options.json) log.start(`forking ${name} into ${clones} clone${clones > 1 ? "s" : ""}`);
      const answer = await controlRequest(name, { op: "fork", clones, memory, spread: options.cluster === true, transport: options.transport === undefined ? undefined : transportOption(options.transport) }, scaledTimeout(60_000));
      if (!answer.ok) throw new SnowflockError("CONTROL", `VM '${name}' could not fork: ${answer.error}`);
      const result = answer.fork!;
      if (options.json) printJson(result);
      else {
        printTable(
          ["CLONE", "ID", "HOST", "PID", "READY", "RESTORED", "RUNNING"],
          result.clones.map((c) => [c.name, String(c.cloneId), c.host ?? "-", String(c.pid), `${c.readyMs.toFixed(1)} ms`, `${c.restoredMs.toFixed(1)} ms`, `${c.runningMs.toFixed(1)} ms`]),
        );
        log.success(`${result.clones.length} clone(s) of ${name} running; parent paused ${result.pausedMs.toFixed(2)} ms, descriptor ${result.descriptorBytes} bytes`);
      }
      for (const f of result.failed) log.error(`${f.name}: ${f.error}`);
      return result.failed.length > 0 ? 1 : 0;
    });
}
