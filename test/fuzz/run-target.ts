/**
 * Runs one target's cases in a Worker and watches it: a case still running after HANG_MS is a
 * finding (slow, with its input made again from its seed and index); the Worker is ended and a
 * new one carries on after that case.
 */
import { corpusOf, type Finding, type FuzzTarget, HANG_MS, makeCase } from "./engine.ts";
import { targetNamed } from "./targets/index.ts";
import type { WorkerCounts, WorkerJob, WorkerMessage } from "./worker.ts";

export interface FuzzReport extends WorkerCounts {
  target: string;
  findings: Finding[];
  seed: number;
  cases: number;
  ms: number;
}

export interface FuzzOptions {
  seed: number;
  cases: number;
  /** The first case's index (a run can resume or replay one case). */
  start?: number;
  minimize?: boolean;
  /** A case running longer than this is ended as a hang. */
  hangMs?: number;
  /** Run the `target` export of this module instead of the registered target (tests of the engine). */
  module?: string;
}

/** Runs cases [start, end) in one Worker; findings go to `findings` as they come. */
function runRange(job: Omit<WorkerJob, "progress">, hangMs: number, findings: Finding[]): Promise<WorkerCounts | { hungAt: number }> {
  const progress = new SharedArrayBuffer(4);
  const index = new Int32Array(progress);
  const worker = new Worker(new URL("./worker.ts", import.meta.url).href);
  return new Promise((resolve, reject) => {
    let last = -1;
    let since = performance.now();
    const watchdog = setInterval(() => {
      const now = Atomics.load(index, 0);
      if (now !== last) {
        last = now;
        since = performance.now();
      } else if (performance.now() - since > hangMs) {
        clearInterval(watchdog);
        worker.terminate();
        resolve({ hungAt: now });
      }
    }, 100);
    worker.onmessage = (event: MessageEvent<WorkerMessage>) => {
      if ("finding" in event.data) return void findings.push(event.data.finding);
      clearInterval(watchdog);
      worker.terminate();
      resolve(event.data.done);
    };
    worker.onerror = (event) => {
      clearInterval(watchdog);
      worker.terminate();
      reject(new Error(`fuzz worker for ${job.name} failed: ${event.message}`));
    };
    index[0] = job.start;
    worker.postMessage({ ...job, progress } satisfies WorkerJob);
  });
}

export async function fuzzTarget(name: string, options: FuzzOptions): Promise<FuzzReport> {
  const target: FuzzTarget = options.module ? (await import(options.module)).target : targetNamed(name);
  const hangMs = options.hangMs ?? HANG_MS;
  const started = performance.now();
  const end = (options.start ?? 0) + options.cases;
  const report: FuzzReport = {
    target: name,
    seed: options.seed,
    cases: options.cases,
    ms: 0,
    accepted: 0,
    refused: 0,
    roundTrips: 0,
    findings: [],
  };
  for (let start = options.start ?? 0; start < end; ) {
    const job = { name, module: options.module, seed: options.seed, start, end, minimize: options.minimize ?? false };
    const result = await runRange(job, hangMs, report.findings);
    if ("hungAt" in result) {
      const c = makeCase(target, corpusOf(target, options.seed), options.seed, result.hungAt);
      const hang: Finding = {
        target: name,
        kind: "slow",
        error: `still running after ${hangMs} ms (hang)`,
        where: "",
        seed: options.seed,
        caseIndex: result.hungAt,
        input: "input" in c ? c.input : undefined,
      };
      report.findings.push(hang);
      start = result.hungAt + 1;
      continue;
    }
    report.accepted += result.accepted;
    report.refused += result.refused;
    report.roundTrips += result.roundTrips;
    start = end;
  }
  report.ms = Math.round(performance.now() - started);
  return report;
}
