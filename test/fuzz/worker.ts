/**
 * Runs a range of one target's cases off the main thread, so the main thread can end a case
 * that hangs (run-target.ts). progress[0] is the case being run; each finding is posted when
 * found (so a later hang loses none), the counts at the end.
 */
import { corpusOf, type Finding, type FuzzTarget, makeCase, minimize, runCase, signature } from "./engine.ts";
import { targetNamed } from "./targets/index.ts";

export interface WorkerJob {
  name: string;
  /** A module whose `target` export to run instead of the registered target `name` (tests of the engine). */
  module?: string;
  seed: number;
  start: number;
  end: number;
  minimize: boolean;
  progress: SharedArrayBuffer;
}

export interface WorkerCounts {
  accepted: number;
  refused: number;
  roundTrips: number;
}

export type WorkerMessage = { finding: Finding } | { done: WorkerCounts };

/** Distinct findings kept per run; later ones with a signature already seen are only counted. */
const MAX_FINDINGS = 20;

declare const self: Worker;

self.onmessage = async (event: MessageEvent<WorkerJob>) => {
  const job = event.data;
  const target: FuzzTarget = job.module ? (await import(job.module)).target : targetNamed(job.name);
  const progress = new Int32Array(job.progress);
  const corpus = corpusOf(target, job.seed);
  const counts: WorkerCounts = { accepted: 0, refused: 0, roundTrips: 0 };
  const seen = new Set<string>();
  for (let i = job.start; i < job.end; i++) {
    Atomics.store(progress, 0, i);
    const c = makeCase(target, corpus, job.seed, i);
    if ("roundTrip" in c) counts.roundTrips++;
    const outcome = runCase(target, c, job.seed, i);
    if (typeof outcome === "string") {
      counts[outcome]++;
      continue;
    }
    if (seen.has(signature(outcome)) || seen.size >= MAX_FINDINGS) continue;
    seen.add(signature(outcome));
    const finding = job.minimize ? { ...outcome, input: minimize(target, outcome) } : outcome;
    self.postMessage({ finding } satisfies WorkerMessage);
  }
  Atomics.store(progress, 0, job.end);
  self.postMessage({ done: counts } satisfies WorkerMessage);
};
