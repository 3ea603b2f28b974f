/** A fork of a VM the hypervisor runs (a Xen domU): the backend's round through the pipeline, reported as every fork is. */
import type { DomainOperations, DomainRoundOptions, DomainRoundResult } from "../backend/backend.ts";
import type { ForkResult } from "./fork-result.ts";
import { type RoundTimings, runRound } from "./pipeline.ts";

/** What the round's memory path cost (eager copy or on-demand image), by phase; `startMs`: its restore phase. */
export function memoryFigures(started: DomainRoundResult, t: RoundTimings, startMs: number): Pick<ForkResult, "eagerCopy" | "onDemand"> {
  return {
    eagerCopy: started.copy && { ...started.copy, shellsMs: t.prepareMs, suspendMs: t.pauseMs, copyMs: t.captureMs, startMs },
    onDemand: started.onDemand && { ...started.onDemand, suspendMs: t.pauseMs, captureMs: t.captureMs, resumeMs: t.resumeMs, startMs },
  };
}

export async function forkDomain(
  domains: DomainOperations,
  parent: string | number,
  clones: number,
  options: DomainRoundOptions,
): Promise<ForkResult> {
  const { started, timings: t } = await runRound(domains.round(parent, clones, options));
  return {
    backend: started.backend,
    parent: started.parent,
    memory: started.copy ? "eager" : "ondemand",
    pausedMs: t.pausedMs,
    descriptorMs: t.distributeMs,
    descriptorBytes: 0,
    // Every clone starts in the restore phase, all in this process: each is running once it ends.
    clones: started.clones.map((c) => ({
      name: c.name,
      cloneId: c.cloneId,
      domid: c.domid,
      mac: c.mac,
      readyMs: t.totalMs,
      restoredMs: t.totalMs - t.restoreMs,
      runningMs: t.totalMs,
    })),
    failed: [],
    totalMs: t.totalMs,
    ...memoryFigures(started, t, t.restoreMs),
    shellsReady: started.shellsReady,
  };
}
