/**
 * The clone pipeline every backend's fork runs: prepare → pause → capture → resume → distribute →
 * restore. A backend supplies the phases (CaptureRound, CloneRound in backend/backend.ts); this
 * file holds their order, the parent's safety (it runs again whatever fails) and the timings that
 * every fork reports.
 */
import type { CaptureRound, CloneRound } from "../backend/backend.ts";

/** How long each phase took, in ms; `pausedMs` is the parent's whole stop, from pause() to resume() done. */
export interface RoundTimings {
  prepareMs: number;
  pauseMs: number;
  captureMs: number;
  resumeMs: number;
  pausedMs: number;
  distributeMs: number;
}

export interface Captured<Source> {
  source: Source;
  timings: RoundTimings;
  /** performance.now() when the round began (its prepare phase). */
  startedAt: number;
}

/** Runs a round up to its distributed source; the caller restores clones from it (now or later). */
export async function captureRound<Source>(round: CaptureRound<Source>): Promise<Captured<Source>> {
  const startedAt = performance.now();
  let mark = startedAt;
  const lap = () => {
    const now = performance.now();
    const ms = now - mark;
    mark = now;
    return ms;
  };
  try {
    await round.prepare();
    const prepareMs = lap();
    await round.pause();
    const pauseMs = lap();
    try {
      await round.capture();
    } catch (error) {
      // The capture's error is the one to report; a parent that could not resume shows so in `ls`.
      await round.resume().catch(() => {});
      throw error;
    }
    const captureMs = lap();
    await round.resume();
    const resumeMs = lap();
    const source = await round.distribute();
    const distributeMs = lap();
    return {
      source,
      startedAt,
      timings: { prepareMs, pauseMs, captureMs, resumeMs, pausedMs: pauseMs + captureMs + resumeMs, distributeMs },
    };
  } catch (error) {
    await round.abandon();
    throw error;
  }
}

/** Runs a whole round: its clones run once this resolves. */
export async function runRound<Source, Started>(
  round: CloneRound<Source, Started>,
): Promise<{ started: Started; timings: RoundTimings & { restoreMs: number; totalMs: number } }> {
  try {
    const { source, timings, startedAt } = await captureRound(round);
    const restoreStarted = performance.now();
    let started: Started;
    try {
      started = await round.restore(source);
    } catch (error) {
      await round.abandon();
      throw error;
    }
    const now = performance.now();
    return { started, timings: { ...timings, restoreMs: now - restoreStarted, totalMs: now - startedAt } };
  } finally {
    await round.release();
  }
}
