/**
 * Runtime overhead: a compute-bound workload (the built-in guest's `compute`: SHA-256 of a small
 * dataset, several passes a round, timed by the guest's own TSC) in a clone against the same VM
 * with all its memory present (the parent, before anything was cloned from it). Per run, one
 * parent runs its rounds, then one clone per memory path runs them again, one after the other on a
 * quiet machine; with `hosts`, a second parent on test host h1 (`run --cluster`) and its clone on
 * h2, memory on demand over the chosen transport. The first round of each VM warms it up (a
 * clone's faults); the rounds after it are its steady state, and the overhead is the clone's
 * median round against its own parent's, the median over runs. Every round's digest is checked
 * against the host's.
 *
 *   snowflock bench overhead [--size 1M] [--passes 16] [--rounds 8] [--runs 5] [--memory cow,ondemand]
 *                            [--hosts 2] [--transport packet] [--mem 64M] [--json] [--out DIR]
 */
import { readFileSync } from "node:fs";
import type { MemoryPath, RemoteTransport } from "../clone/fork-result.ts";
import { SnowflockError } from "../errors.ts";
import { formatSize } from "../size.ts";
import { dataset, sha256Hex } from "../guest/dataset.ts";
import { controlRequest } from "../vmm/control-client.ts";
import { processAlive, readRecord, vmPaths } from "../run-dir.ts";
import { scaledTimeout } from "../timeouts.ts";
import { defaultOutDir } from "./fork.ts";
import { fixed, table } from "./format.ts";
import { machineNote, median } from "./machine.ts";
import {
  cli,
  clusterDown,
  clusterUp,
  FailedRuns,
  lastLine,
  openSession,
  ownPrefix,
  progress,
  progressDone,
  type Session,
  stopVms,
  stopwatch,
} from "./session.ts";
import { linePlot, type Series } from "./svg.ts";
import { writeReportFiles } from "./report-files.ts";

export { defaultOutDir };

export interface OverheadBenchOptions {
  sizeBytes: number;
  passes: number;
  rounds: number;
  seed: number;
  runs: number;
  /** Memory paths of the clones on the parent's own host. */
  memoryPaths: MemoryPath[];
  memoryBytes: number;
  /** Test hosts for the cross-host part (2: the parent on h1, its clone on h2); 0 skips it. */
  hosts: number;
  transport: RemoteTransport;
}

/** One kind of VM measured: the parent (all memory present) or a clone of it. */
export interface OverheadRow {
  vm: string;
  /** Where it ran: "local", or (cross-host) its test host. */
  host: string;
  /** A clone's memory path; undefined for a parent. */
  memory?: MemoryPath;
  /** The median over runs of the VM's median steady round (every round after the first), ms. */
  roundMs: number;
  /** The median over runs of its first round (a clone's warm-up: its faults), ms. */
  warmUpMs: number;
  /** A clone: the median over runs of (its steady round / its parent's in the same run − 1), in %. */
  overheadPct?: number;
  /** Each round's ms, the median over runs (the plot). */
  perRoundMs: number[];
  /** Each run's median steady round, ms. */
  samples: number[];
  available: boolean;
  reason?: string;
}

export interface OverheadReport {
  benchmark: string;
  machine: string;
  runs: number;
  sizeBytes: number;
  passes: number;
  rounds: number;
  memoryBytes: number;
  local: OverheadRow[];
  crossHost: { hosts: number; transport: RemoteTransport; rows: OverheadRow[] } | { skipped: string };
  /** Runs that failed or whose digest differed from the host's (left out of the medians). */
  badRuns: number;
}

const ROUND = /^round (\d+) id (\d+) ns (\d+) sha ([0-9a-f]{16})$/;
const ROUNDS_TIMEOUT_MS = scaledTimeout(300_000);

/** What the compute workload printed as VM `name` with clone id `id`: each round's ms, once all rounds are done. */
async function awaitRounds(name: string, id: number, rounds: number, digest: string): Promise<number[]> {
  const log = vmPaths(name).log;
  const done = `rounds done id ${id}`;
  const deadline = Date.now() + ROUNDS_TIMEOUT_MS;
  for (;;) {
    let text = "";
    try {
      text = readFileSync(log, "utf8");
    } catch {}
    const lines = text.split("\n");
    if (lines.includes(done)) {
      const times: number[] = [];
      for (const line of lines) {
        const round = ROUND.exec(line);
        if (!round || Number(round[2]) !== id) continue;
        if (round[4] !== digest)
          throw new SnowflockError("VM_STATE", `${name}: round ${round[1]} hashed to ${round[4]}, the host to ${digest}`);
        times.push(Number(round[3]) / 1e6);
      }
      if (times.length !== rounds) throw new SnowflockError("VM_STATE", `${name}: ${times.length} round lines, ${rounds} expected`);
      return times;
    }
    const record = readRecord(name);
    if (record && !processAlive(record.pid))
      throw new SnowflockError("VM_STATE", `${name} ended before its rounds were done: ${lastLine(text)}`);
    if (Date.now() > deadline)
      throw new SnowflockError("VM_STATE", `${name} did not finish its rounds within ${ROUNDS_TIMEOUT_MS / 1000} s`, `see ${log}`);
    await Bun.sleep(20);
  }
}

function stopVm(name: string): Promise<void> {
  return stopVms([{ name, pid: readRecord(name)?.pid }], scaledTimeout(10_000));
}

/** What one kind of VM gave in each run. */
interface Measured {
  vm: string;
  host: string;
  memory?: MemoryPath;
  /** Per run that gave one: each round's ms, and the parent's in the same run. */
  runs: Array<{ rounds: number[]; parentRounds: number[] }>;
  reason?: string;
}

const steady = (rounds: number[]) => median(rounds.slice(1));

function summarize(measured: Measured, roundsPerVm: number): OverheadRow {
  const runs = measured.runs;
  const available = runs.length > 0;
  const base = { vm: measured.vm, host: measured.host, memory: measured.memory, available, reason: measured.reason };
  if (!available) return { ...base, roundMs: Number.NaN, warmUpMs: Number.NaN, perRoundMs: [], samples: [] };
  return {
    ...base,
    roundMs: median(runs.map((r) => steady(r.rounds))),
    warmUpMs: median(runs.map((r) => r.rounds[0]!)),
    overheadPct: measured.memory === undefined ? undefined : median(runs.map((r) => 100 * (steady(r.rounds) / steady(r.parentRounds) - 1))),
    perRoundMs: Array.from({ length: roundsPerVm }, (_, i) => median(runs.map((r) => r.rounds[i]!))),
    samples: runs.map((r) => steady(r.rounds)),
  };
}

/**
 * `runs` runs of a parent (on h1 with `cluster`) and, per entry of `clones`, one clone of it after
 * the other. Returns the parent's row and the clones'.
 */
async function measure(
  session: Session,
  options: OverheadBenchOptions,
  clones: Array<{ vm: string; memory: MemoryPath; spread: boolean }>,
  cluster: { transport: RemoteTransport } | undefined,
  failed: FailedRuns,
  label: string,
): Promise<OverheadRow[]> {
  const digest = sha256Hex(dataset(BigInt(options.seed), options.sizeBytes)).slice(0, 16);
  const parent: Measured = { vm: "parent (all memory present)", host: cluster ? "h1" : "local", runs: [] };
  const measured: Measured[] = clones.map((c) => ({ vm: c.vm, host: c.spread ? "h2" : "local", memory: c.memory, runs: [] }));
  const elapsed = stopwatch();
  for (let run = 1; run <= options.runs; run++) {
    const name = `overhead-${++session.runs}`;
    progress(`${label}: run ${run}/${options.runs}, parent rounds (${elapsed()})`);
    const started = await cli(
      session,
      [
        "run",
        "compute",
        `size=${options.sizeBytes}`,
        `passes=${options.passes}`,
        `rounds=${options.rounds}`,
        `seed=${options.seed}`,
        "--detach",
        "--name",
        name,
        "--mem",
        String(options.memoryBytes),
        ...(cluster ? ["--cluster", session.inventory, "--transport", cluster.transport] : []),
      ],
      scaledTimeout(120_000),
    );
    try {
      if (started.status !== 0) throw new SnowflockError("VM_STATE", `the parent did not start: ${lastLine(started.stderr)}`);
      const parentRounds = await awaitRounds(name, 0, options.rounds, digest);
      parent.runs.push({ rounds: parentRounds, parentRounds });
      for (const [i, clone] of clones.entries()) {
        const into = measured[i]!;
        if (into.reason !== undefined) continue;
        progress(`${label}: run ${run}/${options.runs}, ${clone.vm} (${elapsed()})`);
        const answer = await controlRequest(name, { op: "fork", clones: 1, memory: clone.memory, spread: clone.spread }, ROUNDS_TIMEOUT_MS);
        if (!answer.ok) {
          // Refused the first time (e.g. a memory path this host lacks): unavailable, not a failure.
          if (into.runs.length === 0) into.reason = answer.error;
          else failed.record(`${label} run ${run}, ${clone.vm}`, { ok: false, error: answer.error });
          continue;
        }
        const fork = answer.fork!;
        const made = fork.clones[0];
        try {
          if (!made) throw new SnowflockError("VM_STATE", `the clone did not start: ${fork.failed[0]?.error ?? "no clone reported"}`);
          if (clone.spread && (made.host === undefined || made.host === parent.host))
            throw new SnowflockError("VM_STATE", `the clone ran on the parent's host, not another (${made.host ?? "local"})`);
          if (clone.spread) into.host = made.host!;
          into.runs.push({ rounds: await awaitRounds(made.name, made.cloneId, options.rounds, digest), parentRounds });
        } catch (error) {
          failed.record(`${label} run ${run}, ${clone.vm}`, { ok: false, error: (error as Error).message });
        } finally {
          if (made) await stopVm(made.name);
        }
      }
    } catch (error) {
      failed.record(`${label} run ${run}`, { ok: false, error: (error as Error).message });
    } finally {
      await stopVm(name);
    }
  }
  return [parent, ...measured].map((m) => summarize(m, options.rounds));
}

export async function runOverheadBench(options: OverheadBenchOptions): Promise<OverheadReport> {
  const session = openSession("overhead", await ownPrefix("o"));
  const savedRunDir = process.env.SNOWFLOCK_RUN_DIR;
  // This process reads the VMs' logs and talks to their control sockets in the session's run directory.
  process.env.SNOWFLOCK_RUN_DIR = session.runDir;
  const failed = new FailedRuns();
  try {
    const local = await measure(
      session,
      options,
      options.memoryPaths.map((memory) => ({ vm: `${memory} clone`, memory, spread: false })),
      undefined,
      failed,
      "one host",
    );
    let crossHost: OverheadReport["crossHost"] = { skipped: "--hosts 0" };
    if (options.hosts > 0) {
      progress(`cluster up --hosts ${options.hosts}`);
      await clusterUp(session, options.hosts, 1);
      try {
        const rows = await measure(
          session,
          options,
          [{ vm: `clone on another host (${options.transport})`, memory: "ondemand", spread: true }],
          { transport: options.transport },
          failed,
          `${options.hosts} test hosts`,
        );
        crossHost = { hosts: options.hosts, transport: options.transport, rows };
      } finally {
        await clusterDown(session);
      }
    }
    return {
      benchmark:
        `runtime overhead: SHA-256 of a ${formatSize(options.sizeBytes)} dataset ${options.passes}x a round, ` +
        `${options.rounds} rounds, in clones vs the VM with all memory present (${formatSize(options.memoryBytes)} guest)`,
      machine: machineNote(),
      runs: options.runs,
      sizeBytes: options.sizeBytes,
      passes: options.passes,
      rounds: options.rounds,
      memoryBytes: options.memoryBytes,
      local,
      crossHost,
      badRuns: failed.count,
    };
  } finally {
    progressDone();
    session.close();
    if (savedRunDir === undefined) delete process.env.SNOWFLOCK_RUN_DIR;
    else process.env.SNOWFLOCK_RUN_DIR = savedRunDir;
  }
}

const pct = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? "-" : `${n >= 0 ? "+" : ""}${n.toFixed(1)}%`);

export function formatReport(report: OverheadReport): string {
  const lines = [
    report.benchmark,
    `${report.machine}; median of ${report.runs} runs; steady = rounds 2-${report.rounds}, timed by the guest's TSC`,
  ];
  const rows = [...report.local, ...("rows" in report.crossHost ? report.crossHost.rows : [])];
  lines.push(
    "",
    ...table(
      ["VM", "host", "steady ms/round", "first round ms", "overhead"],
      rows.map((r) =>
        r.available
          ? [r.vm, r.host, fixed(r.roundMs), fixed(r.warmUpMs), r.memory === undefined ? "(baseline)" : pct(r.overheadPct)]
          : [r.vm, r.host, "-", "-", `unavailable: ${r.reason}`],
      ),
      2,
    ),
  );
  if ("skipped" in report.crossHost) lines.push(`across hosts: skipped (${report.crossHost.skipped})`);
  if (report.badRuns > 0) lines.push(`${report.badRuns} run(s) failed or hashed wrongly (left out)`);
  return `${lines.join("\n")}\n`;
}

export function plotReport(report: OverheadReport): string {
  const rows = [...report.local, ...("rows" in report.crossHost ? report.crossHost.rows : [])].filter((r) => r.available);
  const series: Series[] = rows.map((r) => ({
    name: r.host === "local" ? r.vm : `${r.vm}, ${r.host}`,
    points: r.perRoundMs.map((ms, i): [number, number] => [i + 1, ms]),
    dashed: r.memory === undefined,
  }));
  return linePlot({
    title: `Compute-bound rounds in clones vs all memory present (median of ${report.runs})`,
    subtitle: report.machine,
    xLabel: "round (1: warm-up)",
    yLabel: "ms per round (guest TSC)",
    series,
  });
}

export function writeReport(report: OverheadReport, dir: string): { json: string; svg: string } {
  return writeReportFiles(dir, "overhead", report, plotReport(report));
}
