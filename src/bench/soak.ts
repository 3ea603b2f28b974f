/**
 * `snowflock bench soak`: many fork/kill cycles of one running VM, on this host and across test
 * hosts, with what the host holds measured before and after: file descriptors and RSS of the
 * parent's VMM (and of every agent), snowflock processes, run-directory entries and kernel tasks in
 * uninterruptible sleep (D state). The parent's RSS is split: its guest's memory (the memfd
 * mappings: the running guest's pages and the frozen images its servers read), which the guest
 * size bounds, and the VMM's own, where a host-side leak would show. A leak of one descriptor, process or file per cycle shows as a
 * delta of the cycle count; a flat table is the goal.
 *
 * "Before" is taken after a few warm-up cycles, so what is set up once (Workers, WASM kernels,
 * sockets kept open) does not count as a leak. Each cycle forks the parent into K clones, waits
 * until they run, kills them and waits until their processes and files are gone.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { SnowflockError } from "../errors.ts";
import { controlRequest } from "../vmm/control-client.ts";
import { endedLogs, KEPT_ENDED_LOGS, processAlive } from "../run-dir.ts";
import type { MemoryPath, RemoteTransport } from "../clone/fork-result.ts";
import { scaledTimeout } from "../timeouts.ts";
import { fixed, mb, table } from "./format.ts";
import { machineNote } from "./machine.ts";
import { writeReportFiles } from "./report-files.ts";
import {
  cli,
  CLI_TIMEOUT_MS,
  clusterDown,
  clusterUp,
  lastLine,
  openSession,
  progress,
  progressDone,
  type Session,
  sessionVms,
} from "./session.ts";
import { linePlot } from "./svg.ts";
import { defaultOutDir } from "./fork.ts";

export { defaultOutDir };

export interface SoakOptions {
  /** Fork/kill cycles on this host; 0 skips. */
  cycles: number;
  /** Cycles across test hosts; 0 skips. */
  crossCycles: number;
  hosts: number;
  clones: number;
  memory: MemoryPath;
  transport: RemoteTransport;
  memoryBytes: number;
}

/** What the host holds at one instant. */
export interface SoakSample {
  cycle: number;
  parentFds: number;
  /** The parent VMM's resident memory but for guest memory. */
  parentRssBytes: number;
  /** Guest memory resident in the parent's mappings (running guest, frozen images). */
  parentGuestRssBytes: number;
  /** Summed over every agent of the test hosts (0 on one host). */
  agentFds: number;
  agentRssBytes: number;
  processes: number;
  /** Files and directories under the run directory, but for the consoles of ended VMs (counted apart). */
  runDirEntries: number;
  /** Consoles of ended VMs, kept up to KEPT_ENDED_LOGS per run directory. */
  endedLogs: number;
  dStateTasks: number;
}

type Metric = Exclude<keyof SoakSample, "cycle">;

export interface SoakPart {
  where: "local" | "cross-host";
  cycles: number;
  clonesPerCycle: number;
  memory: MemoryPath;
  transport?: RemoteTransport;
  durationMs: number;
  before: SoakSample;
  after: SoakSample;
  /** Every sample, for the plot. */
  samples: SoakSample[];
  flat: Record<Metric, boolean>;
  error?: string;
}

export interface SoakReport {
  benchmark: string;
  machine: string;
  command: string;
  parts: SoakPart[];
  /** Parts that failed a cycle or did not stay flat. */
  badRuns: number;
}

const WARM_UP_CYCLES = 5;
const SAMPLES_PER_PART = 50;
const FORK_TIMEOUT_MS = scaledTimeout(60_000);
const GONE_TIMEOUT_MS = scaledTimeout(15_000);
/** Before the first and the last sample: a killed clone's end reaches its parent (and closes its round's servers) a moment after its process is gone. */
const SETTLE_MS = scaledTimeout(1000);
/** RSS moves with the garbage collector: a rise below both of these is not a leak. */
const RSS_SLACK_BYTES = 16 * 2 ** 20;
const RSS_SLACK_SHARE = 0.1;

// ---------------------------------------------------------------------------------------------
// What the host holds.

const processIds = () =>
  readdirSync("/proc")
    .filter((e) => /^\d+$/.test(e))
    .map(Number);

function readOr(path: string, fallback: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return fallback;
  }
}

function fdCount(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return 0;
  }
}

function rssBytes(pid: number): number {
  const kib = readOr(`/proc/${pid}/status`, "").match(/^VmRSS:\s+(\d+) kB/m)?.[1];
  return kib === undefined ? 0 : Number(kib) * 1024;
}

/** Resident bytes of a process's guest memory mappings (memfds named snowflock-*: GuestMemory). */
function guestRssBytes(pid: number): number {
  let inGuest = false;
  let kib = 0;
  for (const line of readOr(`/proc/${pid}/smaps`, "").split("\n")) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) inGuest = line.includes("/memfd:snowflock-");
    else if (inGuest && line.startsWith("Rss:")) kib += Number(line.match(/(\d+) kB/)?.[1] ?? 0);
  }
  return kib * 1024;
}

/** Tasks (threads) in uninterruptible sleep, machine-wide: a wedged VMM or userfaultfd shows here. */
function dStateTasks(): number {
  let count = 0;
  for (const pid of processIds()) {
    let tasks: string[];
    try {
      tasks = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue;
    }
    for (const task of tasks) {
      const stat = readOr(`/proc/${pid}/task/${task}/stat`, "");
      if (stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) === "D") count++;
    }
  }
  return count;
}

/** The session's processes (VMMs, agents): those started with its run directory or a test host's below it. */
function sessionProcesses(session: Session): number[] {
  const markers = [`SNOWFLOCK_RUN_DIR=${session.runDir}\0`, `SNOWFLOCK_RUN_DIR=${session.runDir}/`];
  return processIds().filter((pid) => {
    const environ = pid === process.pid ? "" : readOr(`/proc/${pid}/environ`, "");
    return markers.some((m) => environ.includes(m));
  });
}

function agentPids(session: Session): number[] {
  return sessionProcesses(session).filter((pid) => readOr(`/proc/${pid}/cmdline`, "").split("\0").includes("agent"));
}

/** The run directory and the test hosts' below it. */
function runDirs(session: Session): string[] {
  const below = readdirSync(session.runDir, { withFileTypes: true }).filter((e) => e.isDirectory());
  return [session.runDir, ...below.map((e) => join(session.runDir, e.name))];
}

/** Entries of the run directories, and the consoles of ended VMs among them (NAME.log, NAME.log.1). */
function countEntries(session: Session): { entries: number; endedLogs: number } {
  let entries = 0;
  let ended = 0;
  for (const dir of runDirs(session)) {
    const names = new Set(readdirSync(dir));
    entries += names.size;
    for (const name of endedLogs(dir)) ended += [`${name}.log`, `${name}.log.1`].filter((n) => names.has(n)).length;
  }
  return { entries: entries - ended, endedLogs: ended };
}

function sample(session: Session, cycle: number, parentPid: number): SoakSample {
  const agents = agentPids(session);
  const { entries, endedLogs } = countEntries(session);
  const guest = guestRssBytes(parentPid);
  return {
    cycle,
    parentFds: fdCount(parentPid),
    parentRssBytes: rssBytes(parentPid) - guest,
    parentGuestRssBytes: guest,
    agentFds: agents.reduce((n, pid) => n + fdCount(pid), 0),
    agentRssBytes: agents.reduce((n, pid) => n + rssBytes(pid), 0),
    processes: sessionProcesses(session).length,
    runDirEntries: entries,
    endedLogs,
    dStateTasks: dStateTasks(),
  };
}

function flatness(before: SoakSample, after: SoakSample, dirs: number, guestBytes: number): Record<Metric, boolean> {
  const rssFlat = (a: number, b: number) => b - a <= Math.max(RSS_SLACK_BYTES, a * RSS_SLACK_SHARE);
  return {
    parentFds: after.parentFds <= before.parentFds,
    parentRssBytes: rssFlat(before.parentRssBytes, after.parentRssBytes),
    // The guest may touch all of its memory; more than that would be images kept past their round.
    parentGuestRssBytes: after.parentGuestRssBytes <= Math.max(before.parentGuestRssBytes, guestBytes),
    agentFds: after.agentFds <= before.agentFds,
    agentRssBytes: rssFlat(before.agentRssBytes, after.agentRssBytes),
    processes: after.processes <= before.processes,
    runDirEntries: after.runDirEntries <= before.runDirEntries,
    endedLogs: after.endedLogs <= Math.max(before.endedLogs, 2 * KEPT_ENDED_LOGS * dirs),
    dStateTasks: after.dStateTasks <= before.dStateTasks,
  };
}

// ---------------------------------------------------------------------------------------------
// Cycles.

/** Forks `parent` into `clones` clones, then kills them and waits until they are gone. */
async function cycle(
  session: Session,
  parent: string,
  clones: number,
  memory: MemoryPath,
  spread: boolean,
  transport: RemoteTransport,
): Promise<void> {
  const answer = await controlRequest(
    parent,
    { op: "fork", clones, memory, spread, transport: spread ? transport : undefined },
    FORK_TIMEOUT_MS,
  );
  if (!answer.ok) throw new SnowflockError("VM_STATE", `fork of ${parent} failed: ${answer.error}`);
  const fork = answer.fork!;
  if (fork.failed.length > 0)
    throw new SnowflockError("VM_STATE", `fork of ${parent}: ${fork.failed.map((f) => `${f.name}: ${f.error}`).join("; ")}`);
  await Promise.all(fork.clones.map((c) => controlRequest(c.name, "kill").catch(() => undefined)));
  const names = new Set(fork.clones.map((c) => c.name));
  const deadline = performance.now() + GONE_TIMEOUT_MS;
  for (;;) {
    const left = sessionVms(session).filter((vm) => names.has(vm.name));
    if (left.length === 0 && fork.clones.every((c) => c.pid === undefined || !processAlive(c.pid))) return;
    if (performance.now() > deadline)
      throw new SnowflockError("VM_STATE", `clones still there ${GONE_TIMEOUT_MS / 1000} s after kill: ${[...names].join(", ")}`);
    await Bun.sleep(5);
  }
}

async function startParent(session: Session, name: string, memoryBytes: number, cluster?: RemoteTransport): Promise<number> {
  const args = ["run", "serve", "--detach", "--name", name, "--mem", String(memoryBytes)];
  if (cluster) args.push("--cluster", session.inventory, "--transport", cluster);
  const r = await cli(session, args, CLI_TIMEOUT_MS);
  if (r.status !== 0) throw new SnowflockError("VM_STATE", `could not start the parent VM: ${lastLine(r.stderr)}`);
  const vm = sessionVms(session).find((v) => v.name === name);
  if (!vm) throw new SnowflockError("VM_STATE", `the parent VM ${name} is not running after start`);
  return vm.pid;
}

async function soakPart(session: Session, where: SoakPart["where"], cycles: number, options: SoakOptions): Promise<SoakPart> {
  const spread = where === "cross-host";
  const name = `soak${++session.runs}`;
  const started = performance.now();
  const samples: SoakSample[] = [];
  const parentPid = await startParent(session, name, options.memoryBytes, spread ? options.transport : undefined);
  const every = Math.max(1, Math.floor(cycles / SAMPLES_PER_PART));
  let error: string | undefined;
  let done = 0;
  try {
    for (let i = 0; i < WARM_UP_CYCLES; i++) await cycle(session, name, options.clones, options.memory, spread, options.transport);
    await Bun.sleep(SETTLE_MS);
    samples.push(sample(session, 0, parentPid));
    for (done = 1; done <= cycles; done++) {
      await cycle(session, name, options.clones, options.memory, spread, options.transport);
      if (done === cycles) await Bun.sleep(SETTLE_MS);
      if (done % every === 0 || done === cycles) {
        samples.push(sample(session, done, parentPid));
        const rate = done / ((performance.now() - started) / 1000);
        progress(
          `${where}: cycle ${done}/${cycles} (${fixed(rate)} cycles/s), parent fds ` +
            `${samples.at(-1)!.parentFds}, RSS ${mb(samples.at(-1)!.parentRssBytes)} MiB (+ guest ` +
            `${mb(samples.at(-1)!.parentGuestRssBytes)} MiB)`,
        );
      }
    }
  } catch (e) {
    error = `cycle ${done}: ${(e as Error).message}`;
    samples.push(sample(session, done, parentPid));
  } finally {
    await controlRequest(name, "kill").catch(() => undefined);
  }
  const before = samples[0]!;
  const after = samples.at(-1)!;
  return {
    where,
    cycles: error ? Math.max(0, done - 1) : cycles,
    clonesPerCycle: options.clones,
    memory: spread ? "ondemand" : options.memory,
    transport: spread ? options.transport : undefined,
    durationMs: performance.now() - started,
    before,
    after,
    samples,
    flat: flatness(before, after, runDirs(session).length, options.memoryBytes),
    error,
  };
}

export async function runSoakBench(options: SoakOptions): Promise<SoakReport> {
  const session = openSession("soak", "sfsk");
  const parts: SoakPart[] = [];
  // The cycles talk to the VMs' control sockets from this process: they are in the session's run directory.
  const savedRunDir = process.env.SNOWFLOCK_RUN_DIR;
  process.env.SNOWFLOCK_RUN_DIR = session.runDir;
  try {
    if (options.cycles > 0) parts.push(await soakPart(session, "local", options.cycles, options));
    if (options.crossCycles > 0 && options.hosts > 1) {
      await clusterUp(session, options.hosts, Math.max(4, options.clones * 2));
      try {
        parts.push(await soakPart(session, "cross-host", options.crossCycles, options));
      } finally {
        await clusterDown(session);
      }
    }
  } finally {
    progressDone();
    session.close();
    if (savedRunDir === undefined) delete process.env.SNOWFLOCK_RUN_DIR;
    else process.env.SNOWFLOCK_RUN_DIR = savedRunDir;
  }
  const bad = parts.filter((p) => p.error !== undefined || Object.values(p.flat).includes(false)).length;
  return {
    benchmark: `soak: fork/kill cycles of a running ${mb(options.memoryBytes)} MiB \`serve\` VM, ${options.clones} clone(s) a cycle`,
    machine: machineNote(),
    command:
      `snowflock bench soak --cycles ${options.cycles} --cross-cycles ${options.crossCycles} --hosts ` +
      `${options.hosts} --clones ${options.clones} --memory ${options.memory} --transport ` +
      `${options.transport} --mem ${options.memoryBytes}`,
    parts,
    badRuns: bad,
  };
}

// ---------------------------------------------------------------------------------------------
// Output.

const METRICS: Array<[Metric, string, (n: number) => string]> = [
  ["parentFds", "parent VMM fds", String],
  ["parentRssBytes", "parent VMM RSS but guest memory, MiB", mb],
  ["parentGuestRssBytes", "parent's guest memory resident, MiB", mb],
  ["agentFds", "agents' fds", String],
  ["agentRssBytes", "agents' RSS, MiB", mb],
  ["processes", "the run's processes", String],
  ["runDirEntries", "run-directory entries", String],
  ["endedLogs", `ended VMs' logs (newest ${KEPT_ENDED_LOGS} kept)`, String],
  ["dStateTasks", "D-state tasks (machine)", String],
];

export function formatReport(report: SoakReport): string {
  const lines = [
    report.benchmark,
    report.machine,
    `before = after ${WARM_UP_CYCLES} warm-up cycles; flat = no rise (RSS: under ${mb(RSS_SLACK_BYTES)} ` +
      `MiB or ${RSS_SLACK_SHARE * 100}%; guest memory: within the guest's size; ended VMs' logs: at most ` +
      `the ${KEPT_ENDED_LOGS} newest per run directory)`,
  ];
  for (const part of report.parts) {
    const head =
      `${part.where}: ${part.cycles} cycles, ` +
      `${part.memory}${part.transport ? ` over ${part.transport}` : ""}, ${fixed(part.durationMs / 1000)} ` +
      `s${part.error ? ` — FAILED at ${part.error}` : ""}`;
    const rows = METRICS.map(([key, label, show]) => [
      label,
      show(part.before[key]),
      show(part.after[key]),
      show(part.after[key] - part.before[key]),
      part.flat[key] ? "yes" : "NO",
    ]);
    lines.push("", head, ...table(["what", "before", "after", "delta", "flat"], rows, 1));
  }
  return lines.join("\n");
}

export function writeReport(report: SoakReport, dir: string): { json: string; svg: string } {
  const svg = linePlot({
    title: "snowflock bench soak: what the host holds over fork/kill cycles",
    subtitle: report.machine,
    xLabel: "cycle",
    yLabel: "count (fds, processes, entries)",
    series: report.parts.flatMap((part) =>
      (["parentFds", "agentFds", "processes", "runDirEntries"] as const).map((key) => ({
        name: `${part.where} ${key}`,
        points: part.samples.map((s): [number, number] => [s.cycle, s[key]]),
      })),
    ),
  });
  return writeReportFiles(dir, "soak", report, svg);
}
