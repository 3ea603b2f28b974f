/**
 * Forking a running VM on this host: pause → capture a descriptor → freeze memory → resume the
 * parent → start one VMM process per clone, each restoring the descriptor over a copy-on-write
 * mapping of the frozen image. The parent is paused only for the capture and the freeze.
 */
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { KvmMachine } from "../backend/kvm/machine.ts";
import { encodeDescriptor } from "../descriptor/format.ts";
import { getpid } from "../sys/process.ts";
import { claimName, processAlive, readRecord, runDir } from "../vmm/run-dir.ts";
import { spawnVmm } from "../vmm/spawn.ts";
import { describeMachine } from "./describe.ts";

export interface CloneReport {
  name: string;
  cloneId: number;
  pid: number;
  /** From the end of the parent's pause to the clone's vCPUs running. */
  readyMs: number;
  /** Inside the clone's own process: from its start to the VM restored, and to its vCPUs running. */
  restoredMs: number;
  runningMs: number;
}

export interface ForkResult {
  parent: string;
  memory: "cow";
  /** How long the parent's vCPUs were stopped (capture + freeze). */
  pausedMs: number;
  /** Encoding and writing the descriptor, after the parent resumed. */
  descriptorMs: number;
  descriptorBytes: number;
  clones: CloneReport[];
  failed: Array<{ name: string; error: string }>;
  /** From the pause to the last clone running. */
  totalMs: number;
}

/**
 * `cloneCall`: the guest-physical call block of the guest's sf_clone, when the guest asked for
 * the clones; each clone's copy of it gets that clone's ID as the call's result.
 */
const ENDED_CLONE_WAIT_MS = 5000;

/** A clone of an earlier ticket with the same name may still be tearing down; let it finish. */
async function awaitEndedClone(name: string, parent: string): Promise<void> {
  const deadline = Date.now() + ENDED_CLONE_WAIT_MS;
  for (;;) {
    const record = readRecord(name);
    if (!record || record.parent !== parent || !processAlive(record.pid) || Date.now() > deadline) return;
    await Bun.sleep(10);
  }
}

export async function forkLocal(machine: KvmMachine, about: { name: string; cmdline: string }, ids: number[], cloneCall?: number): Promise<ForkResult> {
  const started = performance.now();
  machine.pause();
  let descriptor;
  let image: number;
  try {
    descriptor = describeMachine(machine, about);
    descriptor.meta.cloneCall = cloneCall;
    image = machine.memory.freeze();
  } finally {
    machine.resume();
  }
  const resumed = performance.now();
  const bytes = encodeDescriptor(descriptor);
  const descriptorPath = join(runDir(), `${about.name}.fork-${ids[0]}-${getpid()}-${Math.round(started)}.sfd`);
  writeFileSync(descriptorPath, bytes, { mode: 0o600 });
  const written = performance.now();
  const imagePath = `/proc/${getpid()}/fd/${image}`;

  try {
    const outcomes = await Promise.allSettled(
      ids.map(async (cloneId): Promise<CloneReport> => {
        const name = `${about.name}.${cloneId}`;
        await awaitEndedClone(name, about.name);
        claimName(name);
        const { pid, status } = await spawnVmm(name, ["__clone", about.name, String(cloneId), descriptorPath, imagePath]);
        return { name, cloneId, pid, readyMs: performance.now() - resumed, restoredMs: status.timings.builtMs, runningMs: status.timings.runningMs ?? 0 };
      }),
    );
    return {
      parent: about.name,
      memory: "cow",
      pausedMs: resumed - started,
      descriptorMs: written - resumed,
      descriptorBytes: bytes.byteLength,
      clones: outcomes.flatMap((o) => (o.status === "fulfilled" ? [o.value] : [])),
      failed: outcomes.flatMap((o, i) => (o.status === "rejected" ? [{ name: `${about.name}.${ids[i]}`, error: (o.reason as Error).message }] : [])),
      totalMs: performance.now() - started,
    };
  } finally {
    rmSync(descriptorPath, { force: true });
  }
}
