/** A clone's VMM process, however it learnt what it is: restores the clone and serves it until it ends. */
import type { LaunchRecord } from "../clone/launch-record.ts";
import { log } from "../output.ts";
import type { StartTimes } from "./launch-clock.ts";

/**
 * Returns the process's exit status; a guest crash is one line on stderr (its console log has it
 * too). `afterRunning`: what can wait until the clone runs; `reportRunning`: how the launcher
 * hears that it runs, when not from the parent.
 */
export async function serveLaunch(
  record: LaunchRecord,
  reported: { afterRunning?: () => void; reportRunning?: (times: StartTimes) => void } = {},
): Promise<number> {
  const { runClone } = await import("./vmm.ts");
  const result = await runClone(record, () => {}, reported);
  if (result.end.kind === "crash")
    log.error(
      `${result.name}: guest crashed on vCPU ${result.end.vcpu}: ${result.end.reason}${result.end.rip ? ` at rip ${result.end.rip}` : ""}`,
    );
  return result.exitStatus;
}
