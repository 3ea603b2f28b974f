/**
 * The clone pipeline's order and its care of the parent (src/clone/pipeline.ts), over a round that
 * records its phases (a unit test of the driver alone; real rounds run in the KVM and Xen fork tests).
 */
import { expect, test } from "bun:test";
import type { CloneRound } from "../../src/backend/backend.ts";
import { captureRound, runRound } from "../../src/clone/pipeline.ts";

function recordingRound(failIn?: string) {
  const phases: string[] = [];
  const phase = (name: string, value?: unknown) => async () => {
    phases.push(name);
    if (name === failIn) throw new Error(`${name} failed`);
    return value;
  };
  const round = {
    prepare: phase("prepare"),
    pause: phase("pause"),
    capture: phase("capture"),
    resume: phase("resume"),
    distribute: phase("distribute", "source"),
    restore: async (source: string) => {
      phases.push(`restore ${source}`);
      if (failIn === "restore") throw new Error("restore failed");
      return "started";
    },
    abandon: phase("abandon"),
    release: phase("release"),
  } as CloneRound<string, string>;
  return { phases, round };
}

test("a round runs prepare, pause, capture, resume, distribute and restore in order, then releases; each phase is timed", async () => {
  const { phases, round } = recordingRound();
  const { started, timings } = await runRound(round);
  expect(started).toBe("started");
  expect(phases).toEqual(["prepare", "pause", "capture", "resume", "distribute", "restore source", "release"]);
  for (const ms of Object.values(timings)) expect(ms).toBeGreaterThanOrEqual(0);
  expect(timings.pausedMs).toBeCloseTo(timings.pauseMs + timings.captureMs + timings.resumeMs, 6);
  expect(timings.totalMs).toBeGreaterThanOrEqual(timings.prepareMs + timings.pausedMs + timings.restoreMs);
});

test("a capture that fails resumes the parent, abandons the round and reports the capture's error", async () => {
  const { phases, round } = recordingRound("capture");
  await expect(runRound(round)).rejects.toThrow("capture failed");
  expect(phases).toEqual(["prepare", "pause", "capture", "resume", "abandon", "release"]);
});

test("a pause that fails is not resumed; a failed prepare or restore abandons; release comes last every time", async () => {
  for (const [failIn, expected] of [
    ["pause", ["prepare", "pause", "abandon", "release"]],
    ["prepare", ["prepare", "abandon", "release"]],
    ["restore", ["prepare", "pause", "capture", "resume", "distribute", "restore source", "abandon", "release"]],
  ] as const) {
    const { phases, round } = recordingRound(failIn);
    await expect(runRound(round)).rejects.toThrow(`${failIn} failed`);
    expect(phases).toEqual([...expected]);
  }
});

test("captureRound stops at the distributed source and leaves restoring and releasing to its caller", async () => {
  const { phases, round } = recordingRound();
  const captured = await captureRound(round);
  expect(captured.source).toBe("source");
  expect(phases).toEqual(["prepare", "pause", "capture", "resume", "distribute"]);
});
