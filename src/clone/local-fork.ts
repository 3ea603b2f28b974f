/**
 * Forking a machine this process runs (KVM), as a round of the clone pipeline (pipeline.ts): pause
 * → capture a descriptor and freeze the memory → resume → distribute (write the descriptor where
 * clone processes read it, start the memory servers), then one VMM process per clone, each
 * restoring the descriptor over a copy-on-write mapping of the frozen image or memory on demand.
 * The parent is stopped only for the capture and the freeze.
 */
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { BackendName, CaptureRound, Machine } from "../backend/backend.ts";
import type { CloneCall, Descriptor } from "../descriptor/format.ts";
import { encodeDescriptor } from "../descriptor/format.ts";
import { close } from "../sys/files.ts";
import { getpid, ownFdPath } from "../sys/process.ts";
import { pruneEndedLogs, runDir } from "../run-dir.ts";
import { launchClone } from "../vmm/spawn.ts";
import type { StartTimes } from "../vmm/launch-clock.ts";
import { type MemoryServer, startMemoryServer } from "../memory/memory-server.ts";
import { formatPageServer } from "../memory/page-server-address.ts";
import type { LaunchRecord } from "./launch-record.ts";
import { SnowflockError } from "../errors.ts";
import type { CloneReport, ForkResult, MemoryPath } from "./fork-result.ts";
import { type FamilyMulticast, multicastMemory, type RemoteServing, startFamilyMulticast } from "./family-multicast.ts";
import { describeMachine } from "./describe.ts";
import { captureRound, type RoundTimings } from "./pipeline.ts";

/** A captured parent that clones can be started from, now or later (a checkpoint). */
export interface CloneSource {
  backend: BackendName;
  parent: string;
  memory: MemoryPath;
  /** For clones on other hosts: serves the frozen image; lives as long as the clones may fault. */
  server?: MemoryServer;
  /** For clones on other hosts over mcdist: the multicast server of this round's family. */
  mcdist?: FamilyMulticast;
  descriptorPath: string;
  descriptorBytes: number;
  /** SHA-256 (hex) of the descriptor: clones that receive it by multicast check it against this. */
  descriptorSha256: string;
  imageFd: number;
  /** The frozen copies of the parent's writable disks that the descriptor names: held open until the source is released. */
  frozenDisks: number[];
  /** When its round began (performance.now()) and how long each phase took. */
  startedAt: number;
  timings: RoundTimings;
}

/**
 * Captures `machine` through the pipeline into a source clones start from.
 * `cloneCall`: the guest's call block when the guest asked for the clones, and what each clone's
 * copy of the call returns.
 */
export async function captureClones(
  machine: Machine,
  about: { name: string; cmdline: string },
  memory: MemoryPath,
  cloneCall?: CloneCall,
  remote?: RemoteServing,
): Promise<CloneSource> {
  const { source, timings, startedAt } = await captureRound(machineRound(machine, about, memory, cloneCall, remote));
  return { ...source, timings, startedAt };
}

/** The KVM round's phases up to the source; see the file comment. */
function machineRound(
  machine: Machine,
  about: { name: string; cmdline: string },
  memory: MemoryPath,
  cloneCall: CloneCall | undefined,
  remote: RemoteServing | undefined,
): CaptureRound<Omit<CloneSource, "startedAt" | "timings">> {
  const stamp = `${getpid()}-${Math.round(performance.now() * 1000)}`;
  const descriptorPath = join(runDir(), `${about.name}.clones-${stamp}.sfd`);
  let descriptor: Descriptor | undefined;
  let imageFd: number | undefined;
  let frozenDisks: number[] = [];
  let server: MemoryServer | undefined;
  return {
    prepare: async () => {},
    pause: async () => machine.pause(),
    capture: async () => {
      ({ descriptor, frozenDisks } = describeMachine(machine, about, { freezeDisks: true }));
      if (remote && frozenDisks.length > 0)
        throw new SnowflockError(
          "USAGE",
          `${about.name} writes a disk: clones on other hosts cannot reach its frozen copy, which this host holds`,
          "fork it without --cluster, or give the VM its disks read-only",
        );
      descriptor.meta.cloneCall = cloneCall;
      // The pages the descriptor just found are the ones a new image needs: no second look while paused.
      imageFd = machine.memory.freeze(descriptor.nonZeroPages);
    },
    resume: async () => machine.resume(),
    distribute: async () => {
      const bytes = encodeDescriptor(descriptor!);
      writeFileSync(descriptorPath, bytes, { mode: 0o600 });
      // Clones on other hosts (remote given) always take their memory on demand from here; the TCP
      // server is also mcdist's fallback should multicast not start. Clones on this host read the
      // frozen image themselves, whatever their memory path: nothing here listens for them.
      if (remote) server = await startMemoryServer({ imageFd: imageFd!, layout: machine.memory.layout, tcpAddress: remote.address });
      const mcdist =
        remote && remote.transport !== "tcp"
          ? await startFamilyMulticast(imageFd!, machine.memory.size, { ...remote, transport: remote.transport }, bytes)
          : undefined;
      return {
        backend: descriptor!.meta.backend,
        parent: about.name,
        memory,
        server,
        mcdist,
        descriptorPath,
        descriptorBytes: bytes.byteLength,
        descriptorSha256: new Bun.CryptoHasher("sha256").update(bytes).digest("hex"),
        imageFd: imageFd!,
        frozenDisks,
      };
    },
    abandon: async () => {
      server?.close();
      rmSync(descriptorPath, { force: true });
      if (imageFd !== undefined) close(imageFd);
      for (const fd of frozenDisks) close(fd);
    },
  };
}

/** What a clone on another host is told of this source's memory (formatPageServer's text form). */
export function remoteMemory(source: CloneSource): string {
  if (source.mcdist) return multicastMemory(source.mcdist);
  if (!source.server?.tcp) throw new SnowflockError("INTERNAL", "this clone source serves no host but its own");
  return formatPageServer(source.server.tcp);
}

export function releaseClones(source: CloneSource): void {
  rmSync(source.descriptorPath, { force: true });
  close(source.imageFd);
  for (const fd of source.frozenDisks) close(fd);
}

/** How a clone's announcement that it runs reaches the code that started it. */
export type AwaitStart = (cloneId: number) => Promise<StartTimes>;

/** What clones on this host are told besides the source: their cluster (siblings may be on other hosts), heuristics left off. */
export type LocalLaunch = Pick<LaunchRecord, "cluster" | "heuristicsOff">;

/** One VMM process per clone ID, each restoring the source over memory of its own. */
export async function spawnClones(source: CloneSource, ids: number[], awaitStart: AwaitStart, launch: LocalLaunch): Promise<ForkResult> {
  const spawnedAt = performance.now();
  const image = ownFdPath(source.imageFd);
  const memory: LaunchRecord["memory"] =
    source.memory === "ondemand" ? { kind: "ondemand", server: { kind: "image", path: image } } : { kind: "cow", imagePath: image };
  const outcomes = await Promise.allSettled(
    ids.map(async (cloneId): Promise<CloneReport> => {
      const name = `${source.parent}.${cloneId}`;
      const record: LaunchRecord = {
        parent: source.parent,
        cloneId,
        descriptor: { kind: "file", path: source.descriptorPath },
        memory,
        ...launch,
      };
      const { pid, times, fromPool } = await launchClone(record, awaitStart(cloneId));
      return {
        name,
        cloneId,
        pid,
        fromPool,
        readyMs: performance.now() - spawnedAt,
        restoredMs: times.builtMs,
        runningMs: times.runningMs,
      };
    }),
  );
  pruneEndedLogs();
  return {
    backend: source.backend,
    parent: source.parent,
    memory: source.memory,
    pausedMs: source.timings.pausedMs,
    descriptorMs: source.timings.distributeMs,
    descriptorBytes: source.descriptorBytes,
    clones: outcomes.flatMap((o) => (o.status === "fulfilled" ? [o.value] : [])),
    failed: outcomes.flatMap((o, i) =>
      o.status === "rejected" ? [{ name: `${source.parent}.${ids[i]}`, error: (o.reason as Error).message }] : [],
    ),
    totalMs: performance.now() - source.startedAt,
  };
}
