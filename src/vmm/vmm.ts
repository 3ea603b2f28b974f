/**
 * A VMM process's life: build the VM (boot it, or restore a clone), publish it under its name
 * (control socket, record, console log), stream its console, answer control requests, and clean
 * up when it ends.
 */
import { writeSync } from "node:fs";
import { runningLine, SAY_RUNNING_VARIABLE, type StartTimes, sinceLaunch } from "./launch-clock.ts";
import { type AllocationHints, createAllocationHints } from "../guest-memory/allocation-hints.ts";
import { writePrivateFile } from "../sys/private-file.ts";
import type { GuestCall, Machine, MachineEnd, MachineOptions } from "../backend/backend.ts";
import { statePersist } from "../backend/persist.ts";
import { machineFactory } from "../backend/select.ts";
import { describeMachine } from "../clone/describe.ts";
import type { ForkResult, MemoryPath, RemoteTransport } from "../clone/fork-result.ts";
import { SnowflockError } from "../errors.ts";
import { Family, type FamilyStats } from "../cluster/family.ts";
import { serveGuestCall } from "../cluster/guest-calls.ts";
import { guestLimits } from "../guest/limits.ts";
import { ConsoleLog } from "./console-log.ts";
import { type Memtap, startMemtap } from "../memory/memtap.ts";
import { type Descriptor, decodeDescriptor, encodeDescriptor, MAX_DESCRIPTOR_FILE_BYTES } from "../descriptor/format.ts";
import { readRegularFile } from "../bounded-read.ts";
import { summarize } from "../descriptor/summary.ts";
import { guestImage } from "../guest/image.ts";
import { checkMemory } from "../guest/workloads.ts";
import { type GuestSpec, guestLabel } from "./guest-spec.ts";
import { CloneStatus, writeHypercallResult } from "../guest/hypercalls.ts";
import { GuestMemory } from "../guest-memory/guest-memory.ts";
import type { McdistAddress } from "../memory/page-server-address.ts";
import { McdistClient } from "../mcdist/client.ts";
import { getpid } from "../sys/process.ts";
import { type Heuristic, planFetches } from "../heuristics/heuristics.ts";
import { type LaunchRecord, launchName } from "../clone/launch-record.ts";
import { ClusterContext, memberRequest, withOwnEnd } from "../cluster/cluster-context.ts";
import { serveControl } from "./control-server.ts";
import type { ControlResponse, VmStatus } from "./protocol.ts";
import { claimName, ensureRunDir, pruneEndedLogs, removeVmFiles, runDir, type VmRecord, vmPaths, writeRecord } from "../run-dir.ts";
import { scaledTimeout } from "../timeouts.ts";

export interface VmSpec {
  name: string;
  guest: GuestSpec;
  memoryBytes: number;
  vcpus: number;
  /** Most clones one sf_request_ticket grants. */
  maxClones: number;
  /** How clones the guest makes get their memory. */
  memoryPath: MemoryPath;
  /** With `--cluster`: the cluster the guest's clones spread over, and how they reach its memory. */
  cluster?: ClusterContext;
  transport?: RemoteTransport;
  /** Avoidance heuristics switched off for the guest's clones. */
  heuristicsOff?: Heuristic[];
}

export const DEFAULT_MAX_CLONES = 32;

export interface VmResult {
  name: string;
  workload: string;
  cmdline: string;
  end: MachineEnd;
  /** The exit status the snowflock process should have: the guest's, or 70 for a crash. */
  exitStatus: number;
  /** The newest console lines (what SNOWFLOCK_GUEST_LIMITS' console-memory keeps), and how many older ones were left out. */
  console: string[];
  consoleDropped: number;
  pagesTouched: number;
  /** The family this VM made: clones and what their memory cost. */
  stats: FamilyStats;
  /** Each clone round: the parent's pause, the descriptor, and each clone's restore and start. */
  forks: ForkResult[];
  timings: {
    /** From process start to the VM being built (memory, KVM, image loaded or state restored). */
    vmReadyMs: number;
    /** From process start to every vCPU thread running. */
    startedMs: number;
    /** From process start to the guest's first console line. */
    firstConsoleLineMs: number | null;
    /** From process start to the VM's end. */
    endMs: number;
  };
}

export const CRASH_EXIT_STATUS = 70;
/** How long a clone on another host waits for one page before it fails. */
const REMOTE_MEMORY_TIMEOUT_MS = scaledTimeout(15_000);

type Identity = Omit<VmRecord, "pid" | "startedAt"> & { workloadName: string };

/** Pauses the VM only while its state is captured; encodes and writes after resuming. */
function writeDescriptor(machine: Machine, name: string, cmdline: string, path: string) {
  const started = performance.now();
  machine.pause();
  let descriptor: Descriptor;
  try {
    descriptor = describeMachine(machine, { name, cmdline }).descriptor;
  } finally {
    machine.resume();
  }
  const pausedMs = performance.now() - started;
  const bytes = encodeDescriptor(descriptor);
  writePrivateFile(path, bytes);
  const { descriptor: decoded, envelope } = decodeDescriptor(bytes);
  return { ...summarize(decoded, envelope, bytes.byteLength), pausedMs };
}

/** How long a VM stopped from outside waits for its clones (here or on other hosts) to answer their kill. */
const END_CLONES_WHEN_STOPPED_MS = 3000;

/** For a clone: tells its parent how it ended, with its memtap's counters (never throws). */
async function tellParentEnded(identity: Identity, options: ServeOptions, end: MachineEnd): Promise<void> {
  if (!identity.parent || !identity.cloneId) return;
  const status = end.kind === "exit" ? end.status : end.kind === "crash" ? CloneStatus.CRASHED : CloneStatus.KILLED;
  const counters = options.memtap?.stats();
  const memory = counters && {
    faults: counters.faults,
    pagesFetched: counters.pagesFetched,
    pagesMulticast: counters.pagesMulticast,
    framesRejected: counters.framesRejected,
    retries: counters.retries,
    framesShed: counters.framesShed,
    pagesZeroFilled: counters.pagesZeroFilled,
    pagesFreeFilled: counters.pagesFreeFilled,
    pagesAllocationFilled: counters.pagesAllocationFilled,
    pagesPrefetched: counters.pagesPrefetched,
    bytesReceived: counters.bytesReceived,
    faultServiceHistogram: counters.faultServiceHistogram.map((b) => b.count),
  };
  await memberRequest(options.cluster, identity.parent, {
    op: "clone-ended",
    cloneId: identity.cloneId,
    status,
    memory,
    incarnation: options.cluster?.parentIncarnation,
    ...(end.kind === "exit" && end.result !== undefined ? { result: end.result } : {}),
  }).catch(() => undefined);
}

/** What serveMachine hands every machine it builds: the console, and its end as soon as the vCPUs stopped. */
type ServeHooks = Required<Pick<MachineOptions, "onConsole" | "onConsolePartial" | "onDeviceError" | "afterStop">>;
type BuildMachine = (hooks: ServeHooks, onGuestCall: (call: GuestCall) => Promise<bigint>) => Machine;

interface ServeOptions {
  maxClones: number;
  memoryPath: MemoryPath;
  /** For an on-demand clone: its memtap, which must be told when the VM ends. */
  memtap?: Memtap;
  cluster?: ClusterContext;
  transport?: RemoteTransport;
  heuristicsOff?: Heuristic[];
  /** Once the vCPUs run and the parent was told: what could wait until then. */
  afterRunning?: () => void;
  /** How a clone tells whoever launched it that it runs, when not by a request to its parent (a pooled VMM's claim connection). */
  reportRunning?: (times: StartTimes) => void;
}

async function serveMachine(
  identity: Identity,
  options: ServeOptions,
  build: BuildMachine,
  onConsole: (line: string) => void,
): Promise<VmResult> {
  ensureRunDir();
  // For this VMM's launcher only, not for the processes it starts (its clones, its pool).
  const sayRunning = process.env[SAY_RUNNING_VARIABLE] === "1";
  delete process.env[SAY_RUNNING_VARIABLE];
  const paths = vmPaths(identity.name, runDir());
  const limits = guestLimits();
  const consoleLog = new ConsoleLog(paths.log, limits);

  let firstConsoleLineMs: number | null = null;
  let family: Family | undefined;
  // A clone whose memory server fails is stopped before its vCPUs could run on a missing page.
  let memoryFailure: Error | undefined;
  const endOf = (end: MachineEnd): MachineEnd => (memoryFailure ? { kind: "crash", reason: memoryFailure.message, vcpu: 0 } : end);
  let endReported: Promise<void> | undefined;
  /** A clone tells its parent how it ended once (its counters are final when its vCPUs stopped). */
  const reportEnd = (end: MachineEnd) => (endReported ??= tellParentEnded(identity, options, endOf(end)));
  const machine = build(
    {
      onConsole: (line) => {
        firstConsoleLineMs ??= sinceLaunch();
        consoleLog.add(line);
        onConsole(line);
      },
      onConsolePartial: (text) => consoleLog.partial(text),
      // Where the user looks when the guest reports I/O errors (`snowflock logs`), marked as ours.
      onDeviceError: (message) => consoleLog.add(`[snowflock] ${message}`),
      // The parent's join waits for this, not for the teardown after it.
      afterStop: reportEnd,
    },
    (call) => serveGuestCall(family!, machine.memory, call),
  );
  const familyIdentity = {
    name: identity.name,
    cmdline: identity.workload,
    memoryBytes: identity.memoryBytes,
    parent: identity.parent,
    cloneId: identity.cloneId,
  };
  family = new Family(
    machine,
    familyIdentity,
    options.maxClones,
    options.memoryPath,
    options.cluster,
    options.transport,
    options.heuristicsOff,
    limits,
  );
  void options.memtap?.failed.then((error) => {
    memoryFailure = error;
    void machine.stop();
  });
  const vmReadyMs = sinceLaunch();
  const startedAt = Date.now();
  let runningMs: number | null = null;

  const status = (): VmStatus => ({
    ...identity,
    host: options.cluster?.host.name,
    pid: getpid(),
    state: runningMs === null ? "starting" : "running",
    timings: { builtMs: vmReadyMs, runningMs },
    uptimeMs: Date.now() - startedAt,
    consoleLines: consoleLog.total,
    pagesTouched: machine.pagesTouched(),
  });
  let stoppedFromOutside = false;
  const control = serveControl(paths.socket, async (request): Promise<ControlResponse> => {
    switch (request.op) {
      case "kill":
        stoppedFromOutside = true;
        setTimeout(() => void machine.stop(), 0);
        return { ok: true };
      case "descriptor":
        return { ok: true, descriptor: writeDescriptor(machine, identity.name, identity.workload, request.path) };
      case "fork":
        return { ok: true, fork: await family.operatorFork(request.clones, request.memory, request.spread === true, request.transport) };
      case "input":
        return { ok: true, accepted: machine.consoleInput(new Uint8Array(Buffer.from(request.data, "base64"))) };
      case "message":
        return family.deliver(request.from, new Uint8Array(Buffer.from(request.data, "base64")));
      case "clone-started":
        family.cloneStarted(request.cloneId, { builtMs: request.builtMs, runningMs: request.runningMs });
        return { ok: true };
      case "clone-ended":
        family.cloneEnded(request.cloneId, request.status, request.memory, request.incarnation, request.result);
        return { ok: true };
      case "status":
        return { ok: true, status: status() };
    }
  });
  writeRecord({ ...identity, pid: getpid(), startedAt: new Date(startedAt).toISOString(), host: options.cluster?.host.name });
  const stopOnSignal = () => {
    stoppedFromOutside = true;
    void machine.stop();
  };
  process.on("SIGINT", stopOnSignal);
  process.on("SIGTERM", stopOnSignal);

  try {
    await machine.start().catch(async (error) => {
      await machine.stop();
      throw error;
    });
    const startedMs = sinceLaunch();
    runningMs = startedMs;
    if (sayRunning) {
      try {
        writeSync(2, `${runningLine({ builtMs: vmReadyMs, runningMs })}\n`);
      } catch {} // a full disk under the run directory: the launcher asks the control socket instead
    }
    if (options.reportRunning) options.reportRunning({ builtMs: vmReadyMs, runningMs });
    else if (identity.parent && identity.cloneId) {
      await memberRequest(options.cluster, identity.parent, {
        op: "clone-started",
        cloneId: identity.cloneId,
        builtMs: vmReadyMs,
        runningMs,
      }).catch(() => undefined);
    }
    options.afterRunning?.();
    const end = endOf(await machine.ended);
    await options.memtap?.stop();
    // A clone's process has no terminal: its console log is where `snowflock logs` shows why it ended.
    if (end.kind === "crash")
      consoleLog.add(`[snowflock] guest crashed on vCPU ${end.vcpu}: ${end.reason}${end.rip ? ` at rip ${end.rip}` : ""}`);
    await reportEnd(end); // a machine stopped before its vCPUs ran never called afterStop
    // Stopped by a signal (Ctrl-C on `snowflock run`) or a kill request, a VM takes its clones with
    // it, as `snowflock kill NAME` does: sf_clone's clones would wait for a parent that is gone. A
    // clone ended so ends its own clones in turn, on whichever host they run.
    if (stoppedFromOutside) await family.endClones(END_CLONES_WHEN_STOPPED_MS);
    return {
      name: identity.name,
      workload: identity.workloadName,
      cmdline: identity.workload,
      end,
      exitStatus: end.kind === "exit" ? end.status : end.kind === "crash" ? CRASH_EXIT_STATUS : 0,
      console: consoleLog.lines(),
      consoleDropped: consoleLog.dropped,
      pagesTouched: machine.pagesTouched(),
      stats: family.stats(),
      forks: family.forks,
      timings: { vmReadyMs, startedMs, firstConsoleLineMs, endMs: sinceLaunch() },
    };
  } finally {
    process.off("SIGINT", stopOnSignal);
    process.off("SIGTERM", stopOnSignal);
    control.close();
    family.close();
    consoleLog.close();
    removeVmFiles(identity.name, { keepLog: true }, runDir());
  }
}

/** Boots the built-in guest with a workload, or the user's kernel, and serves it until it ends. */
export async function runVm(spec: VmSpec, onConsole: (line: string) => void): Promise<VmResult> {
  const { guest } = spec;
  if (guest.kind === "workload") checkMemory(guest.workload, spec.memoryBytes);
  const machines = await machineFactory("kvm");
  // A clone's name was claimed by whoever launched it; a VM of its own claims here.
  ensureRunDir();
  claimName(spec.name);
  pruneEndedLogs();
  const label = guestLabel(guest);
  const identity = {
    name: spec.name,
    workload: label.cmdline,
    workloadName: label.name,
    memoryBytes: spec.memoryBytes,
    vcpus: spec.vcpus,
  };
  return serveMachine(
    identity,
    {
      maxClones: spec.maxClones,
      memoryPath: spec.memoryPath,
      cluster: spec.cluster,
      transport: spec.transport,
      heuristicsOff: spec.heuristicsOff,
    },
    (hooks, onGuestCall) => {
      const options = { vcpus: spec.vcpus, ...hooks, onGuestCall };
      return guest.kind === "workload"
        ? machines.boot(guestImage(), spec.memoryBytes, `${guest.workload.cmdline} smp=${spec.vcpus}`, options)
        : machines.boot(
            guest.guest.image,
            spec.memoryBytes,
            guest.guest.files.cmdline,
            { ...options, disks: guest.disks, ...(guest.net ? { net: guest.net } : {}), scratchDirectory: runDir() },
            guest.guest.initrd,
          );
    },
    onConsole,
  );
}

/**
 * The descriptor a clone restores: a file, or fetched from the family's mcdist server (the
 * clone's memory source), checked against the size and digest its clone order named. `release`
 * closes what fetched it: closing a packet socket waits for an RCU grace period, which the caller
 * lets overlap its memtap's start.
 */
function readDescriptor(
  source: LaunchRecord["descriptor"],
  memory: LaunchRecord["memory"],
  cluster: ClusterContext | undefined,
): { bytes: Uint8Array; release(): void } {
  if (source.kind === "file")
    return {
      bytes: readRegularFile(source.path, { what: "descriptor", maxBytes: MAX_DESCRIPTOR_FILE_BYTES, code: "DESCRIPTOR" }),
      release() {},
    };
  if (memory.kind !== "ondemand" || memory.server.kind !== "mcdist")
    throw new SnowflockError("DESCRIPTOR", "a descriptor sent by multicast needs an mcdist memory source");
  const server = withOwnEnd(memory.server, cluster) as McdistAddress;
  const client = McdistClient.open({
    transport: server.transport!,
    server: server.server,
    family: server.family,
    key: server.key,
    pageCount: 1,
    mtu: server.mtu,
    timeoutMs: REMOTE_MEMORY_TIMEOUT_MS,
    wakeFd: -1,
    // A few frames: read one by one, without a ring to set up and tear down while the clone starts.
    ring: false,
  });
  try {
    const bytes = client.fetchDescriptor(source.bytes, source.sha256);
    let open = true;
    return {
      bytes,
      release: () => {
        if (open) client.close();
        open = false;
      },
    };
  } catch (error) {
    client.close();
    throw error;
  }
}

/** Restores a clone from its parent's descriptor and memory and serves it until it ends. */
export async function runClone(
  spec: LaunchRecord,
  onConsole: (line: string) => void,
  reported: Pick<ServeOptions, "afterRunning" | "reportRunning"> = {},
): Promise<VmResult> {
  // A clone on another host than its parent reaches its family through the agents.
  const environment = spec.cluster;
  const cluster =
    environment && ClusterContext.load(environment.inventory, environment.host, environment.placement, environment.parentIncarnation);
  const fetched = readDescriptor(spec.descriptor, spec.memory, cluster);
  try {
    return await restoreClone(spec, fetched, cluster, onConsole, reported);
  } finally {
    fetched.release();
  }
}

/** runClone's part once it has the descriptor: `fetched` is released once the clone runs. */
async function restoreClone(
  spec: LaunchRecord,
  fetched: ReturnType<typeof readDescriptor>,
  cluster: ClusterContext | undefined,
  onConsole: (line: string) => void,
  reported: Pick<ServeOptions, "afterRunning" | "reportRunning">,
): Promise<VmResult> {
  const { descriptor } = decodeDescriptor(fetched.bytes);
  const machines = await machineFactory(descriptor.meta.backend);
  const identity = {
    name: launchName(spec),
    workload: descriptor.meta.cmdline,
    workloadName: descriptor.meta.cmdline.split(" ")[0] ?? "",
    memoryBytes: descriptor.meta.memorySize,
    vcpus: statePersist(descriptor.meta.backend).summary(descriptor.state).length,
    parent: spec.parent,
    cloneId: spec.cloneId,
  };
  // Its own clones inherit what its parent switched off.
  const heuristicsOff = spec.heuristicsOff;
  const layout = { size: descriptor.meta.memorySize, regions: descriptor.meta.regions };
  let memory: GuestMemory;
  let memtap: Memtap | undefined;
  let allocationHints: AllocationHints | undefined;
  if (spec.memory.kind === "cow") memory = GuestMemory.openImage(spec.memory.imagePath, layout);
  else {
    memory = GuestMemory.createEmpty(layout);
    // Over a network a page may need several retransmissions: wait longer before failing.
    const timeoutMs = spec.memory.server.kind === "unix" || spec.memory.server.kind === "image" ? undefined : REMOTE_MEMORY_TIMEOUT_MS;
    const plan = planFetches(descriptor.nonZeroPages, descriptor.freePages, heuristicsOff);
    if (!heuristicsOff.includes("allocation-hints")) allocationHints = createAllocationHints(memory.size);
    const starting = startMemtap({
      memory,
      timeoutMs,
      server: withOwnEnd(spec.memory.server, cluster),
      nonZeroPages: plan.fetch,
      freePages: plan.spareByFreePages,
      prefetch: !heuristicsOff.includes("prefetch"),
      allocationHints,
      eagerPages: descriptor.pages,
    });
    memtap = await starting;
  }
  // The guest asked for this clone: its sf_clone (or checkpoint) call returns here.
  const call = descriptor.meta.cloneCall;
  if (call) writeHypercallResult(memory, call.block, call.returns === "clone-id" ? BigInt(spec.cloneId) : 0n);
  return serveMachine(
    identity,
    {
      maxClones: DEFAULT_MAX_CLONES,
      memoryPath: spec.memory.kind,
      memtap,
      cluster,
      heuristicsOff,
      ...reported,
      // Closing a packet socket waits for an RCU grace period (10-30 ms): not while the clone starts.
      afterRunning: () => {
        fetched.release();
        reported.afterRunning?.();
      },
    },
    (hooks, onGuestCall) => {
      const machine = machines.restore(descriptor.state, memory, {
        cloneId: spec.cloneId,
        ...hooks,
        onGuestCall,
        beforeClose: () => memtap?.release(),
        allocationHints,
        scratchDirectory: runDir(),
      });
      machine.freePageMap = descriptor.meta.freePageMap; // its allocator is its parent's
      return machine;
    },
    onConsole,
  );
}
