/**
 * Fork latency: time from pausing a running VM (`serve`, 1 GiB by default, or the user's own Linux:
 * bench-guest.ts) to N running clones, for each snowflock memory path, beside QEMU saving the same
 * guest's state to a file and restoring N QEMUs from it (bench/peers/qemu-snapshot.ts). Median of
 * several runs, the ratio, a table, fork.json and fork.svg (time vs N, log2 x axis); and each
 * one's boot of the guest to its first console line.
 *
 *   snowflock bench fork [--clones 1,2,4] [--mem 1G] [--runs 3] [--memory cow] [--no-peer] [--json] [--out DIR]
 *   snowflock bench fork --kernel BZIMAGE [--initrd FILE] [--cmdline "..."] [--ready TEXT] [same options]
 *   bun bin/snowflock.ts bench fork [same options]      (from source; `bun run bench:fork`)
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import type { ForkResult, MemoryPath } from "../clone/fork-result.ts";
import { SnowflockError } from "../errors.ts";
import { type BenchGuest, awaitConsole, guestTitle, runArguments } from "./bench-guest.ts";
import { formatSize } from "../size.ts";
import { controlRequest } from "../vmm/control-client.ts";
import { listVms, readRecord, runDir, vmPaths } from "../run-dir.ts";
import type { PoolState } from "../pool/keeper.ts";
import { setPool } from "../pool/pool-daemon.ts";
import { fillPool } from "./pool-fill.ts";
import { awaitQuietHost } from "./quiet-host.ts";
import { cpuByProcess, cpuMsSince, hostCpuMs } from "./process-cpu.ts";
import { cliCommand, progress, progressDone, stopVms } from "./session.ts";
import { machineNote, median } from "./machine.ts";
import { ensureQemu, killAllQemu, QemuSnapshotPeer } from "./peers/qemu-snapshot.ts";
import { linePlot, type Series } from "./svg.ts";
import { writeReportFiles } from "./report-files.ts";

export interface ForkBenchOptions {
  guest: BenchGuest;
  clones: number[];
  memoryBytes: number;
  runs: number;
  /** Memory paths to pass to fork (`cow`; later `ondemand`). */
  memoryPaths: string[];
  peer: boolean;
  /** Largest N the QEMU peer runs (each restored QEMU is a process of its own). */
  peerMaxClones: number;
  /** Ready VMMs the host's pool keeps (filled before each fork); 0 runs every fork without a pool. */
  pool: number;
}

interface SnowflockRow {
  clones: number;
  totalMs: number;
  perCloneMs: number;
  pausedMs: number;
  /** Median over runs of the median clone's readyMs (end of pause to its control socket answering). */
  cloneReadyMs: number;
  /** Inside the clone's process (medians): process start to VM restored, and to vCPUs running. */
  cloneRestoredMs: number;
  cloneRunningMs: number;
  /** Median over runs of the clones that a ready VMM from the pool served. */
  fromPool: number;
  /** Median over runs of the CPU (all threads) of the parent and the clones from just before the fork to all running, per clone. */
  cpuPerCloneMs: number;
  /** The same for the whole host (every process and the kernel; 10 ms ticks): what the parent and clones leave out shows beside it. */
  hostCpuPerCloneMs: number;
  samples: { totalMs: number[]; pausedMs: number[]; cpuMs: number[]; hostCpuMs: number[] };
}

/** One fork's answer and the CPU its processes, and the whole host, spent on it. */
interface MeasuredFork {
  result: ForkResult;
  cpuMs: number;
  hostCpuMs: number;
}

interface PeerRow {
  clones: number;
  totalMs: number;
  saveMs: number;
  restoreMs: number;
  downtimeMs: number;
  samples: { totalMs: number[]; saveMs: number[]; restoreMs: number[] };
}

export interface ForkReport {
  benchmark: string;
  machine: string;
  runs: number;
  memoryBytes: number;
  clones: number[];
  /** snowflock's boot of the parent: from `run --detach` to its first console byte (the first parent's). */
  bootToFirstLineMs?: number;
  /** One `snowflock --version` process, start to exit (median of the runs): the process start a pool saves. */
  versionStartMs: number;
  /** The host's pool of ready VMMs as the last fork found it (before it), or null without one. */
  pool: PoolState | null;
  snowflock: Array<{ memory: string; available: boolean; reason?: string; results: SnowflockRow[] }>;
  peer?:
    | {
        name: string;
        /** Boot of the source VM until it was ready, and until its first console byte. */
        bootMs: number;
        bootToFirstLineMs: number;
        stateBytes: number;
        maxClones: number;
        note?: string;
        results: PeerRow[];
      }
    | { name: string; skipped: string };
}

const PARENT = "bench-parent";
/** The pool as the last fork found it. */
let lastPool: PoolState | null = null;
const RUN_TIMEOUT_MS = 120_000;

/** Thrown when the VMM refuses a memory path: reported as unavailable, not as a failure. */
class Unavailable extends Error {}

/** bench/results of the snowflock checkout the working directory is in, else the working directory. */
export function defaultOutDir(): string {
  for (let dir = process.cwd(); ; dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as { name?: string };
      if (pkg.name === "snowflock" && existsSync(join(dir, "bench"))) return join(dir, "bench/results");
    } catch {}
    if (dirname(dir) === dir) return process.cwd();
  }
}

/** Starts the parent VM (`snowflock run ... --detach`) and waits until its console shows it ready; ms to its first console byte. */
async function startParent(memoryBytes: number, guest: BenchGuest): Promise<number> {
  const started = performance.now();
  const child = Bun.spawn([...cliCommand(), ...runArguments(guest), "--detach", "--name", PARENT, "--mem", String(memoryBytes)], {
    stdin: "ignore",
    stdout: "ignore",
    stderr: "pipe",
    env: { ...process.env, SNOWFLOCK_QUIET: "1" },
  });
  const [stderr, status] = await Promise.all([new Response(child.stderr).text(), child.exited]);
  if (status !== 0)
    throw new SnowflockError(
      "VM_STATE",
      `the parent VM did not start: ${stderr
        .replace(/\x1b\[[0-9;]*m/g, "")
        .trim()
        .split("\n")
        .pop()}`,
    );
  const log = vmPaths(PARENT).log;
  try {
    const firstByteAt = await awaitConsole(
      guest,
      () =>
        Bun.file(log)
          .text()
          .catch(() => ""),
      () => readRecord(PARENT) !== undefined,
      guest.kind === "builtin" ? 30_000 : 120_000,
      "the parent VM",
    );
    return firstByteAt - started;
  } catch (error) {
    throw new SnowflockError("VM_STATE", (error as Error).message, `see ${log}`);
  }
}

/** The median time of one `snowflock --version` process, start to exit. */
async function versionStart(runs: number): Promise<number> {
  const times: number[] = [];
  for (let run = 0; run < Math.max(runs, 3); run++) {
    const started = performance.now();
    const child = Bun.spawn([...cliCommand(), "--version"], { stdin: "ignore", stdout: "ignore", stderr: "ignore" });
    if ((await child.exited) !== 0) throw new SnowflockError("INTERNAL", "`snowflock --version` failed");
    times.push(performance.now() - started);
  }
  return median(times);
}

/**
 * Forks N clones, checks they all run with the requested memory path, and stops them again. The
 * CPU counted is the parent's and the clones' (a pooled clone's process from before its claim, a
 * new one's from its start) until the fork answers, and the whole host's over the same time.
 */
async function forkOnce(clones: number, memory: string, pool: number): Promise<MeasuredFork> {
  lastPool = await fillPool(runDir(), pool);
  await awaitQuietHost();
  const parentPid = readRecord(PARENT)?.pid;
  const forkProcesses = (pids: Array<number | undefined>) => cpuByProcess(pids.filter((pid) => pid !== undefined));
  const before = forkProcesses([parentPid, ...(lastPool?.pids ?? [])]);
  const hostBefore = hostCpuMs().busy;
  // Passed through as given: the VMM itself refuses a memory path it does not have.
  const request = { op: "fork" as const, clones, memory: memory as MemoryPath };
  const answer = await controlRequest(PARENT, request, RUN_TIMEOUT_MS);
  if (!answer.ok) throw new Unavailable(answer.error);
  const result = answer.fork!;
  const hostCpu = hostCpuMs().busy - hostBefore;
  const cpuMs = cpuMsSince(before, forkProcesses([parentPid, ...result.clones.map((clone) => clone.pid)]));
  try {
    if (result.memory !== memory) throw new Unavailable(`the VMM ignored it and forked with '${result.memory}'`);
    const failed = result.failed[0];
    if (failed) throw new SnowflockError("VM_STATE", `clone ${failed.name} did not start: ${failed.error}`);
    return { result, cpuMs, hostCpuMs: hostCpu };
  } finally {
    await stopVms(result.clones);
  }
}

async function benchPath(
  options: ForkBenchOptions,
  memory: string,
  onBoot: (firstLineMs: number) => void,
): Promise<ForkReport["snowflock"][number]> {
  onBoot(await startParent(options.memoryBytes, options.guest));
  try {
    try {
      progress(`snowflock ${memory}: warm-up fork`);
      await forkOnce(1, memory, options.pool);
    } catch (error) {
      if (error instanceof Unavailable) return { memory, available: false, reason: error.message, results: [] };
      throw error;
    }
    const results: SnowflockRow[] = [];
    for (const n of options.clones) {
      const measured: MeasuredFork[] = [];
      for (let run = 1; run <= options.runs; run++) {
        progress(`snowflock ${memory}: ${n} clone${n > 1 ? "s" : ""}, run ${run}/${options.runs}`);
        measured.push(await forkOnce(n, memory, options.pool));
      }
      const forks = measured.map((m) => m.result);
      const totalMs = forks.map((f) => f.totalMs);
      const pausedMs = forks.map((f) => f.pausedMs);
      const cpuMs = measured.map((m) => m.cpuMs);
      const hostCpu = measured.map((m) => m.hostCpuMs);
      results.push({
        clones: n,
        totalMs: median(totalMs),
        perCloneMs: median(totalMs.map((t) => t / n)),
        pausedMs: median(pausedMs),
        cloneReadyMs: median(forks.map((f) => median(f.clones.map((c) => c.readyMs)))),
        cloneRestoredMs: median(forks.map((f) => median(f.clones.map((c) => c.restoredMs)))),
        cloneRunningMs: median(forks.map((f) => median(f.clones.map((c) => c.runningMs)))),
        fromPool: median(forks.map((f) => f.clones.filter((c) => c.fromPool).length)),
        cpuPerCloneMs: median(cpuMs.map((cpu) => cpu / n)),
        hostCpuPerCloneMs: median(hostCpu.map((cpu) => cpu / n)),
        samples: { totalMs, pausedMs, cpuMs, hostCpuMs: hostCpu },
      });
    }
    return { memory, available: true, results };
  } finally {
    const parent = readRecord(PARENT);
    if (parent) await stopVms([parent]);
  }
}

async function benchPeer(options: ForkBenchOptions, dir: string): Promise<NonNullable<ForkReport["peer"]>> {
  const name = "qemu-system-x86_64 -accel kvm: migrate to a file, N x -incoming";
  const peer = new QemuSnapshotPeer(dir, options.memoryBytes, options.guest);
  try {
    progress("qemu: booting the source VM (firmware boot, a few seconds here)");
    const { bootMs, firstLineMs } = await peer.boot();
    progress("qemu: warm-up save and restore");
    let stateBytes = (await peer.save()).bytes;
    await peer.restore(1);
    const results: PeerRow[] = [];
    for (const n of options.clones.filter((c) => c <= options.peerMaxClones)) {
      const save: number[] = [];
      const restore: number[] = [];
      const downtime: number[] = [];
      for (let run = 1; run <= options.runs; run++) {
        progress(`qemu: ${n} restored instance${n > 1 ? "s" : ""}, run ${run}/${options.runs}`);
        await awaitQuietHost();
        const saved = await peer.save();
        stateBytes = saved.bytes;
        save.push(saved.saveMs);
        downtime.push(saved.downtimeMs);
        restore.push(await peer.restore(n));
      }
      const totalMs = save.map((s, i) => s + restore[i]!);
      results.push({
        clones: n,
        totalMs: median(totalMs),
        saveMs: median(save),
        restoreMs: median(restore),
        downtimeMs: median(downtime),
        samples: { totalMs, saveMs: save, restoreMs: restore },
      });
    }
    const capped = options.clones.some((c) => c > options.peerMaxClones);
    return {
      name,
      bootMs,
      bootToFirstLineMs: firstLineMs,
      stateBytes,
      maxClones: options.peerMaxClones,
      note: capped ? `QEMU run for N <= ${options.peerMaxClones} only` : undefined,
      results,
    };
  } finally {
    await peer.close();
  }
}

/** Runs the whole benchmark in a private run directory; everything it started is gone after. */
export async function runForkBench(options: ForkBenchOptions): Promise<ForkReport> {
  const noQemu = options.peer ? ensureQemu(progress) : undefined;
  if (noQemu) throw new SnowflockError("USAGE", noQemu, "install qemu-system-x86 or pass --no-peer");
  const tmp = mkdtempSync(join(tmpdir(), "snowflock-bench-fork-"));
  mkdirSync(join(tmp, "run"), { mode: 0o700 });
  mkdirSync(join(tmp, "qemu"));
  const savedRunDir = process.env.SNOWFLOCK_RUN_DIR;
  process.env.SNOWFLOCK_RUN_DIR = join(tmp, "run");
  const cleanup = () => {
    for (const pid of lastPool?.pids ?? []) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {}
    }
    for (const vm of listVms()) {
      try {
        process.kill(vm.pid, "SIGKILL");
      } catch {}
    }
    killAllQemu();
    rmSync(tmp, { recursive: true, force: true });
  };
  const interrupted = () => {
    progressDone();
    process.stderr.write("interrupted; stopping the benchmark's VMs\n");
    cleanup();
    process.exit(130);
  };
  process.on("SIGINT", interrupted);
  process.on("SIGTERM", interrupted);
  try {
    progress("snowflock --version: process start");
    const versionStartMs = await versionStart(options.runs);
    lastPool = null;
    const snowflock: ForkReport["snowflock"] = [];
    let bootToFirstLineMs: number | undefined;
    for (const memory of options.memoryPaths) snowflock.push(await benchPath(options, memory, (ms) => (bootToFirstLineMs ??= ms)));
    const peer = options.peer ? await benchPeer(options, join(tmp, "qemu")) : { name: "qemu", skipped: "--no-peer" };
    return {
      benchmark: `fork: pause of a running ${formatSize(options.memoryBytes)} ${guestTitle(options.guest)} to N clones running`,
      machine: machineNote(),
      runs: options.runs,
      memoryBytes: options.memoryBytes,
      clones: options.clones,
      bootToFirstLineMs,
      versionStartMs,
      pool: lastPool,
      snowflock,
      peer,
    };
  } finally {
    progressDone();
    await setPool(runDir(), { size: 0 }).catch(() => undefined);
    process.off("SIGINT", interrupted);
    process.off("SIGTERM", interrupted);
    cleanup();
    if (savedRunDir === undefined) delete process.env.SNOWFLOCK_RUN_DIR;
    else process.env.SNOWFLOCK_RUN_DIR = savedRunDir;
  }
}

const ms = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? "-" : `${n.toFixed(1)}`);

/** The report as text tables: one per memory path. */
export function formatReport(report: ForkReport): string {
  const peer = report.peer && "results" in report.peer ? report.peer : undefined;
  const lines = [report.benchmark, `${report.machine}; median of ${report.runs} runs`];
  if (peer)
    lines.push(
      `peer: ${peer.name}; state file ${formatSize(peer.stateBytes)} (${peer.stateBytes} bytes); source ` +
        `boot ${ms(peer.bootMs)} ms${peer.note ? `; ${peer.note}` : ""}`,
    );
  if (report.bootToFirstLineMs !== undefined)
    lines.push(
      `boot to the first console line: snowflock ${ms(report.bootToFirstLineMs)} ms` +
        (peer ? `, QEMU ${ms(peer.bootToFirstLineMs)} ms (${(peer.bootToFirstLineMs / report.bootToFirstLineMs).toFixed(2)}x)` : ""),
    );
  else if (report.peer && "skipped" in report.peer) lines.push(`peer: skipped (${report.peer.skipped})`);
  lines.push(
    `one \`snowflock --version\` process: ${ms(report.versionStartMs)} ms; ` +
      (report.pool
        ? `pool of ${report.pool.size} ready VMMs (${formatSize(report.pool.idleBytes)} idle)`
        : "no pool (every clone a new process)"),
  );
  for (const path of report.snowflock) {
    lines.push("", `memory ${path.memory}${path.available ? "" : `: unavailable (${path.reason})`}`);
    if (!path.available) continue;
    const header = [
      "N",
      "snowflock ms",
      "T(N)/T(1)",
      "marginal ms",
      "of --version",
      "from pool",
      "CPU ms/clone",
      "host CPU ms/clone",
      "parent paused ms",
      "QEMU save+restore ms",
      "QEMU/snowflock",
    ];
    const first = path.results[0];
    const rows = path.results.map((r) => {
      const q = peer?.results.find((p) => p.clones === r.clones);
      const marginal = first && r.clones > first.clones ? (r.totalMs - first.totalMs) / (r.clones - first.clones) : undefined;
      return [
        String(r.clones),
        ms(r.totalMs),
        first ? `${(r.totalMs / first.totalMs).toFixed(2)}` : "-",
        ms(marginal),
        marginal === undefined ? "-" : `${((100 * marginal) / report.versionStartMs).toFixed(1)}%`,
        `${r.fromPool}/${r.clones}`,
        ms(r.cpuPerCloneMs),
        ms(r.hostCpuPerCloneMs),
        ms(r.pausedMs),
        q ? ms(q.totalMs) : "-",
        q ? `${(q.totalMs / r.totalMs).toFixed(2)}x` : "-",
      ];
    });
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
    for (const row of [header, ...rows])
      lines.push(row.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  "));
  }
  return `${lines.join("\n")}\n`;
}

export function plotReport(report: ForkReport): string {
  const series: Series[] = report.snowflock
    .filter((p) => p.available)
    .map((p) => ({ name: `snowflock fork (${p.memory})`, points: p.results.map((r): [number, number] => [r.clones, r.totalMs]) }));
  if (report.peer && "results" in report.peer) {
    series.push({
      name: "QEMU migrate to file + N restores",
      points: report.peer.results.map((r): [number, number] => [r.clones, r.totalMs]),
      dashed: true,
    });
  }
  return linePlot({
    title: `Time to N running clones (${formatSize(report.memoryBytes)} guest, median of ${report.runs})`,
    subtitle: report.machine,
    xLabel: "clones N (log2 scale)",
    yLabel: "ms from pause to all N running",
    xLog2: true,
    series,
  });
}

/** Writes fork.json and fork.svg into `dir`; returns their paths. */
export function writeReport(report: ForkReport, dir: string): { json: string; svg: string } {
  return writeReportFiles(dir, "fork", report, plotReport(report));
}
