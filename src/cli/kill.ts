/** `snowflock kill NAME`: stop a running VM. */
import type { CAC } from "cac";
import { SnowflockError } from "../errors.ts";
import { controlRequest } from "../vmm/control-client.ts";
import { checkName, processAlive, readRecord, removeVmFiles } from "../vmm/run-dir.ts";
import { log, printJson } from "./output.ts";

const STOP_TIMEOUT_MS = 5000;

export function registerKill(cli: CAC): void {
  cli
    .command("kill <name>", "Stop a running VM")
    .option("--json", "Print the result as JSON")
    .action(async (rawName: string, options: { json?: boolean }) => {
      const name = checkName(String(rawName));
      const record = readRecord(name);
      if (!record || !processAlive(record.pid)) {
        removeVmFiles(name, { keepLog: true });
        throw new SnowflockError("NOT_FOUND", `no running VM named '${name}'`, "`snowflock ls` lists the running VMs");
      }
      let how = "stopped";
      const answer = await controlRequest(name, "kill").catch(() => undefined);
      if (!answer?.ok) process.kill(record.pid, "SIGTERM");
      const deadline = Date.now() + STOP_TIMEOUT_MS;
      while (processAlive(record.pid) && Date.now() < deadline) await Bun.sleep(20);
      if (processAlive(record.pid)) {
        process.kill(record.pid, "SIGKILL");
        removeVmFiles(name, { keepLog: true });
        how = "killed (it did not stop in time)";
      }
      if (options.json) printJson({ name, pid: record.pid, result: how });
      else log.success(`${name} ${how}`);
    });
}
