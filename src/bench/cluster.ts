/**
 * Clones over many hosts: `snowflock run WORKLOAD ... --cluster` on test hosts (network
 * namespaces on this machine, `snowflock cluster up`), for each host count, clone count and
 * page transport (mcdist multicast `packet`/`udp` vs unicast-only `tcp`). Per combination, the
 * median over runs of: pause to all clones running (`forks[0].totalMs`), time to the workload's
 * result (the `run` command's wall time and the VMM's own `timings.endMs`), what h1's memory
 * server sent (bytes, frames), pages fetched by request vs received by multicast, and the
 * runtime overhead against the same workload and clone count on one host with all memory
 * present (plain `snowflock run`, local copy-on-write clones), measured in the same session.
 * Every run's console is checked against the answer computed on this host; a run that differs
 * is marked (and left out of the medians), and the command then exits 1.
 *
 *   snowflock bench cluster [--clones 1,2,4,8,16,32] [--hosts 1,2,4,8] [--transport packet,tcp]
 *                           [--runs 3] [--workload search-par] [--size 16M] [--mem 64M] [--json] [--out DIR]
 *   bun bin/snowflock.ts bench cluster [same options]   (from source)
 *
 * One `cluster up` per host count (prefix `sfb<pid>`, a private SNOWFLOCK_RUN_DIR), reused for
 * all its runs and removed with `cluster down` before the next one, and on error or Ctrl-C.
 */
import type { RemoteTransport } from "../clone/fork-result.ts";
import { SnowflockError } from "../errors.ts";
import { formatSize } from "../size.ts";
import { defaultOutDir } from "./fork.ts";
import { expectedConsole } from "../guest/dataset.ts";
import { fixed, mb, table, whole } from "./format.ts";
import { machineNote, median } from "./machine.ts";
import {
  checkRun,
  cli,
  clusterDown,
  clusterUp,
  FailedRuns,
  hostRunDirs,
  openSession,
  ownPrefix,
  progress,
  progressDone,
  RUN_TIMEOUT_MS,
  type Session,
  settle,
  stopwatch,
} from "./session.ts";
import { linePlot, type Series } from "./svg.ts";
import { writeReportFiles } from "./report-files.ts";
import { fillPool } from "./pool-fill.ts";
import { awaitQuietHost } from "./quiet-host.ts";
import { setPool } from "../pool/pool-daemon.ts";

export { defaultOutDir };

export type ClusterWorkload = "search-par" | "sha256-par";
export const CLUSTER_WORKLOADS: ClusterWorkload[] = ["search-par", "sha256-par"];

export interface ClusterBenchOptions {
  clones: number[];
  hosts: number[];
  runs: number;
  transports: RemoteTransport[];
  workload: ClusterWorkload;
  sizeBytes: number;
  memoryBytes: number;
  seed: number;
  /** MTU of the test hosts' links. */
  mtu: number;
  /**
   * Ready VMMs each host's pool keeps, full before each run (the baseline's on this host, each test
   * host's in its agent); undefined: as many as a host takes of the largest N; 0: no pool.
   */
  pool?: number;
}

/** One `snowflock run`: what it measured, or why it does not count. */
export interface RunSample {
  ok: boolean;
  error?: string;
  /** Spawn to exit of the `run` command (includes Bun's start and, with --cluster, re-running inside h1's namespace). */
  wallMs: number;
  endMs: number;
  allRunningMs: number;
  serverBytesSent: number;
  serverFramesSent: number;
  pagesFetched: number;
  pagesMulticast: number;
  bytesReceived: number;
  /** After the run command exited, how long a VM of it (e.g. a clone on another host) was still running; the next run waits for that. */
  lingerMs: number;
  /** Clones per host (the parent runs on h1). */
  placement: Record<string, number>;
  remoteClones: number;
  /** Clones a ready VMM of their host's pool served. */
  fromPool: number;
}

interface Medians {
  okRuns: number;
  allRunningMs: number;
  endMs: number;
  wallMs: number;
  serverBytesSent: number;
  serverFramesSent: number;
  pagesFetched: number;
  pagesMulticast: number;
  bytesReceived: number;
  remoteClones: number;
  fromPool: number;
}

export interface BaselineRow extends Medians {
  clones: number;
  errors: string[];
  samples: RunSample[];
}

export interface ClusterRow extends Medians {
  hosts: number;
  clones: number;
  transport: RemoteTransport;
  /** Median endMs over the baseline's median endMs for the same clone count. */
  overhead: number;
  /** serverBytesSent per clone on another host than h1 (median over runs). */
  bytesPerRemoteClone: number;
  placement: Record<string, number>;
  errors: string[];
  samples: RunSample[];
}

export interface ClusterReport {
  benchmark: string;
  machine: string;
  command: string;
  runs: number;
  workload: ClusterWorkload;
  sizeBytes: number;
  memoryBytes: number;
  seed: number;
  /** MTU of the test hosts' links. */
  mtu: number;
  /** Ready VMMs per host (the baseline's host, then per host count), 0 without a pool. */
  pool: { baseline: number; perHostCount: Record<string, number> };
  clones: number[];
  hosts: number[];
  transports: RemoteTransport[];
  startedAt: string;
  durationMs: number;
  /** Runs whose console differed from the host's answer, or that failed. */
  badRuns: number;
  baseline: BaselineRow[];
  results: ClusterRow[];
}

// ---------------------------------------------------------------------------------------------
// Running the CLI.

const EMPTY: Omit<RunSample, "ok" | "wallMs" | "lingerMs"> = {
  endMs: NaN,
  allRunningMs: NaN,
  serverBytesSent: NaN,
  serverFramesSent: NaN,
  pagesFetched: NaN,
  pagesMulticast: NaN,
  bytesReceived: NaN,
  placement: {},
  remoteClones: NaN,
  fromPool: NaN,
};

/**
 * One `snowflock run WORKLOAD ... --json`, with or without --cluster; checks its console. With a
 * pool (`pool` ready VMMs per host), each host's is filled first.
 */
async function runOnce(
  session: Session,
  options: ClusterBenchOptions,
  clones: number,
  expected: string[],
  pool: number,
  transport?: RemoteTransport,
): Promise<RunSample> {
  for (const dir of transport ? hostRunDirs(session) : [session.runDir]) await fillPool(dir, pool);
  await awaitQuietHost();
  // A name of its own per run: a clone of the previous run may still be ending on its host.
  const name = `bench${++session.runs}`;
  const args = [
    "run",
    options.workload,
    `size=${options.sizeBytes}`,
    `seed=${options.seed}`,
    `clones=${clones}`,
    "--mem",
    String(options.memoryBytes),
    "--max-clones",
    String(Math.max(32, clones)),
    "--name",
    name,
    "--json",
  ];
  if (transport) args.push("--cluster", session.inventory, "--transport", transport);
  const r = await cli(session, args, RUN_TIMEOUT_MS);
  const lingerMs = await settle(session);
  const checked = checkRun(r, clones, expected);
  if ("error" in checked) return { ok: false, error: checked.error, wallMs: r.wallMs, lingerMs, ...EMPTY };
  const { result, placement, remoteClones, problems } = checked;
  const sample: RunSample = {
    ok: true,
    wallMs: r.wallMs,
    lingerMs,
    endMs: result.timings.endMs,
    allRunningMs: result.forks[0]?.totalMs ?? NaN,
    serverBytesSent: result.stats.serverBytesSent,
    serverFramesSent: result.stats.serverFramesSent,
    pagesFetched: result.stats.pagesFetched,
    pagesMulticast: result.stats.pagesMulticast,
    bytesReceived: result.stats.bytesReceived,
    placement,
    remoteClones,
    fromPool: (result.forks[0]?.clones ?? []).filter((c) => c.fromPool).length,
  };
  return problems.length > 0 ? { ...sample, ok: false, error: problems.join("; ") } : sample;
}

function medians(samples: RunSample[]): Medians {
  const ok = samples.filter((s) => s.ok);
  const m = (key: keyof Omit<Medians, "okRuns">) => (ok.length ? median(ok.map((s) => s[key] as number)) : NaN);
  return {
    okRuns: ok.length,
    allRunningMs: m("allRunningMs"),
    endMs: m("endMs"),
    wallMs: m("wallMs"),
    serverBytesSent: m("serverBytesSent"),
    serverFramesSent: m("serverFramesSent"),
    pagesFetched: m("pagesFetched"),
    pagesMulticast: m("pagesMulticast"),
    bytesReceived: m("bytesReceived"),
    remoteClones: m("remoteClones"),
    fromPool: m("fromPool"),
  };
}

// ---------------------------------------------------------------------------------------------

/** Runs the whole sweep; every cluster it made is gone after, also on error or a signal. */
export async function runClusterBench(options: ClusterBenchOptions): Promise<ClusterReport> {
  if (process.getuid?.() !== 0)
    throw new SnowflockError("USAGE", "bench cluster makes test hosts (network namespaces) and needs root", "run it as root");
  const prefix = await ownPrefix("b");
  const session = openSession("cluster", prefix);
  const started = performance.now();
  const elapsed = stopwatch(started);
  const failures = new FailedRuns();
  try {
    progress(`computing the expected ${options.workload} answers for ${formatSize(options.sizeBytes)} seed ${options.seed} on this host`);
    const expectedFor = expectedConsole(options.workload, options.seed, options.sizeBytes);
    const expected = new Map(options.clones.map((n) => [n, expectedFor(n)]));

    // Baseline: one host, all memory present, local copy-on-write clones (no --cluster).
    const largest = Math.max(...options.clones);
    const poolFor = (hosts: number) => options.pool ?? Math.ceil(largest / hosts);
    const pool: ClusterReport["pool"] = { baseline: poolFor(1), perHostCount: {} };
    const baseline: BaselineRow[] = [];
    progress(`[${elapsed()}] baseline: warm-up run${pool.baseline ? ` (a pool of ${pool.baseline} ready VMMs here)` : ""}`);
    failures.record(
      "baseline warm-up",
      await runOnce(session, options, options.clones[0]!, expected.get(options.clones[0]!)!, pool.baseline),
    );
    for (const n of options.clones) {
      const samples: RunSample[] = [];
      for (let run = 1; run <= options.runs; run++) {
        progress(`[${elapsed()}] baseline (one host, local cow), clones ${n}: run ${run}/${options.runs}`);
        const sample = await runOnce(session, options, n, expected.get(n)!, pool.baseline);
        failures.record(`baseline clones ${n} run ${run}`, sample);
        samples.push(sample);
      }
      baseline.push({ clones: n, ...medians(samples), errors: samples.flatMap((s) => (s.error ? [s.error] : [])), samples });
    }
    // The test hosts' agents keep their own pools; this host's would only hold memory.
    await setPool(session.runDir, { size: 0 });

    const results: ClusterRow[] = [];
    const maxClones = Math.max(16, ...options.clones);
    for (const hosts of options.hosts) {
      const hostPool = poolFor(hosts);
      pool.perHostCount[hosts] = hostPool;
      progress(
        `[${elapsed()}] hosts ${hosts}: cluster up (prefix ${prefix}, --max-clones ${maxClones}, --mtu ${options.mtu}, --pool ${hostPool})`,
      );
      await clusterUp(session, hosts, maxClones, options.mtu, hostPool);
      try {
        for (const transport of options.transports) {
          progress(`[${elapsed()}] hosts ${hosts}, ${transport}: warm-up run`);
          const warmClones = options.clones.find((n) => n >= hosts) ?? options.clones[options.clones.length - 1]!;
          failures.record(
            `hosts ${hosts} ${transport} warm-up`,
            await runOnce(session, options, warmClones, expected.get(warmClones)!, hostPool, transport),
          );
        }
        for (const n of options.clones) {
          for (const transport of options.transports) {
            const samples: RunSample[] = [];
            for (let run = 1; run <= options.runs; run++) {
              progress(`[${elapsed()}] hosts ${hosts}, clones ${n}, ${transport}: run ${run}/${options.runs}`);
              const sample = await runOnce(session, options, n, expected.get(n)!, hostPool, transport);
              failures.record(`hosts ${hosts}, clones ${n}, ${transport}, run ${run}`, sample);
              samples.push(sample);
            }
            const med = medians(samples);
            const base = baseline.find((b) => b.clones === n)!;
            const firstOk = samples.find((s) => s.ok);
            const ok = samples.filter((s) => s.ok && s.remoteClones > 0);
            results.push({
              hosts,
              clones: n,
              transport,
              ...med,
              overhead: med.endMs / base.endMs,
              bytesPerRemoteClone: ok.length ? median(ok.map((s) => s.serverBytesSent / s.remoteClones)) : NaN,
              placement: firstOk?.placement ?? {},
              errors: samples.flatMap((s) => (s.error ? [s.error] : [])),
              samples,
            });
          }
        }
      } finally {
        progress(`[${elapsed()}] hosts ${hosts}: cluster down`);
        await clusterDown(session);
      }
    }
    return {
      benchmark:
        `cluster: ${options.workload} size=${formatSize(options.sizeBytes)} seed=${options.seed} in a ` +
        `${formatSize(options.memoryBytes)} guest, clones spread over test hosts (network namespaces on this ` +
        `machine, MTU ${options.mtu})`,
      machine: machineNote(),
      command:
        `snowflock bench cluster --clones ${options.clones.join(",")} --hosts ${options.hosts.join(",")} ` +
        `--transport ${options.transports.join(",")} --runs ${options.runs} --workload ${options.workload} ` +
        `--size ${formatSize(options.sizeBytes)} --mem ${formatSize(options.memoryBytes)} --seed ` +
        `${options.seed} --mtu ${options.mtu}${options.pool === undefined ? "" : ` --pool ${options.pool}`}`,
      runs: options.runs,
      workload: options.workload,
      sizeBytes: options.sizeBytes,
      memoryBytes: options.memoryBytes,
      seed: options.seed,
      mtu: options.mtu,
      pool,
      clones: options.clones,
      hosts: options.hosts,
      transports: options.transports,
      startedAt: new Date(Date.now() - (performance.now() - started)).toISOString(),
      durationMs: performance.now() - started,
      badRuns: failures.count,
      baseline,
      results,
    };
  } finally {
    progressDone();
    await setPool(session.runDir, { size: 0 }).catch(() => undefined);
    session.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Output.

function poolLine(pool: ClusterReport["pool"]): string {
  const perHost = Object.entries(pool.perHostCount).map(([hosts, size]) => `${size} with ${hosts} host${hosts === "1" ? "" : "s"}`);
  if (pool.baseline === 0 && Object.values(pool.perHostCount).every((size) => size === 0)) return "no pools: every clone a new process";
  return `ready VMMs per host, filled before each run: baseline ${pool.baseline}; test hosts ${perHost.join(", ") || "-"}`;
}

/** The report as text: the baseline, then one table per transport. */
export function formatReport(report: ClusterReport): string {
  const lines = [
    report.benchmark,
    `${report.machine}; median of ${report.runs} runs; ${(report.durationMs / 60_000).toFixed(1)} min`,
    "all-run = pause to the last clone running (forks[0].totalMs); result = VMM process start to the " +
      "guest's end (timings.endMs); wall = the run command, spawn to exit;",
    "overhead = result / baseline result for the same N; MB = h1's memory server bytes sent (MiB); " +
      "/remote = MB per clone not on h1; fetched = pages by request, mcast = pages received by multicast; " +
      "pool = clones a ready VMM served.",
    poolLine(report.pool),
    "",
    "baseline: one host, all memory present (plain `snowflock run`, local copy-on-write clones)",
    ...table(
      ["N", "all-run ms", "result ms", "wall ms", "pool", "ok"],
      report.baseline.map((b) => [
        String(b.clones),
        fixed(b.allRunningMs),
        fixed(b.endMs),
        fixed(b.wallMs),
        `${whole(b.fromPool)}/${b.clones}`,
        `${b.okRuns}/${b.samples.length}`,
      ]),
    ),
  ];
  for (const transport of report.transports) {
    lines.push("", `transport ${transport}${transport === "tcp" ? " (unicast only)" : " (mcdist multicast)"}`);
    lines.push(
      ...table(
        [
          "hosts",
          "N",
          "remote",
          "all-run ms",
          "result ms",
          "wall ms",
          "overhead",
          "server MB",
          "/remote",
          "frames",
          "fetched",
          "mcast",
          "pool",
          "ok",
        ],
        report.results
          .filter((r) => r.transport === transport)
          .map((r) => [
            String(r.hosts),
            String(r.clones),
            whole(r.remoteClones),
            fixed(r.allRunningMs),
            fixed(r.endMs),
            fixed(r.wallMs),
            Number.isFinite(r.overhead) ? `${r.overhead.toFixed(2)}x` : "-",
            mb(r.serverBytesSent),
            mb(r.bytesPerRemoteClone),
            whole(r.serverFramesSent),
            whole(r.pagesFetched),
            whole(r.pagesMulticast),
            `${whole(r.fromPool)}/${r.clones}`,
            `${r.okRuns}/${r.samples.length}`,
          ]),
      ),
    );
  }
  const lingering = [
    ...report.baseline.flatMap((b) => b.samples.map((x) => ({ what: `baseline N=${b.clones}`, ms: x.lingerMs }))),
    ...report.results.flatMap((r) => r.samples.map((x) => ({ what: `hosts ${r.hosts} N=${r.clones} ${r.transport}`, ms: x.lingerMs }))),
  ].sort((a, b) => b.ms - a.ms);
  if (lingering[0])
    lines.push(
      "",
      `VMs still running after the run command exited (the next run waited for them): at most ` +
        `${fixed(lingering[0].ms, 0)} ms (${lingering[0].what}); median ` +
        `${fixed(median(lingering.map((x) => x.ms)), 0)} ms`,
    );
  const bad = [
    ...report.baseline.map((b) => ({ what: `baseline N=${b.clones}`, errors: b.errors })),
    ...report.results.map((r) => ({ what: `hosts ${r.hosts} N=${r.clones} ${r.transport}`, errors: r.errors })),
  ].filter((x) => x.errors.length);
  if (report.badRuns > 0 || bad.length > 0) {
    lines.push("", `${report.badRuns} run(s) failed or printed a wrong answer (left out of the medians):`);
    for (const x of bad) for (const e of x.errors) lines.push(`  ${x.what}: ${e}`);
  }
  return `${lines.join("\n")}\n`;
}

const HOST_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f"];

function clusterSeries(report: ClusterReport, value: (r: ClusterRow) => number): Series[] {
  const series: Series[] = [];
  for (const transport of report.transports) {
    report.hosts.forEach((hosts, i) => {
      const rows = report.results.filter((r) => r.transport === transport && r.hosts === hosts);
      series.push({
        name: `${hosts} host${hosts > 1 ? "s" : ""}, ${transport}`,
        points: rows.map((r): [number, number] => [r.clones, value(r)]),
        color: HOST_COLORS[i % HOST_COLORS.length],
        dashed: transport === "tcp",
      });
    });
  }
  return series;
}

/** Several linePlot SVGs stacked into one. */
function stack(svgs: string[]): string {
  let y = 0;
  let width = 0;
  const inner = svgs.map((svg) => {
    const w = Number(/width="(\d+(?:\.\d+)?)"/.exec(svg)?.[1] ?? 800);
    const h = Number(/height="(\d+(?:\.\d+)?)"/.exec(svg)?.[1] ?? 440);
    const placed = svg.trim().replace(/^<svg /, `<svg x="0" y="${y}" `);
    y += h;
    width = Math.max(width, w);
    return placed;
  });
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${y}" viewBox="0 0 ${width} ` +
    `${y}">\n<rect width="${width}" height="${y}" fill="white"/>\n${inner.join("\n")}\n</svg>\n`
  );
}

export function plotReport(report: ClusterReport): string {
  const what = `${report.workload} ${formatSize(report.sizeBytes)}, median of ${report.runs}; solid: mcdist multicast, dashed: tcp unicast`;
  const baseline = (value: (b: BaselineRow) => number): Series => ({
    name: "baseline: one host, local cow",
    points: report.baseline.map((b): [number, number] => [b.clones, value(b)]),
    color: "#000000",
    dashed: true,
  });
  return stack([
    linePlot({
      title: `Memory server bytes sent vs clones (${what})`,
      subtitle: report.machine,
      xLabel: "clones N (log2 scale)",
      yLabel: "MiB sent by h1's memory server",
      xLog2: true,
      series: clusterSeries(report, (r) => r.serverBytesSent / 2 ** 20),
    }),
    linePlot({
      title: "Time to all clones running (pause to the last clone running)",
      subtitle: what,
      xLabel: "clones N (log2 scale)",
      yLabel: "ms",
      xLog2: true,
      series: [...clusterSeries(report, (r) => r.allRunningMs), baseline((b) => b.allRunningMs)],
    }),
    linePlot({
      title: "Time to the workload's result (VMM start to the guest's end)",
      subtitle: what,
      xLabel: "clones N (log2 scale)",
      yLabel: "ms",
      xLog2: true,
      series: [...clusterSeries(report, (r) => r.endMs), baseline((b) => b.endMs)],
    }),
  ]);
}

/** Writes cluster.json and cluster.svg into `dir`; returns their paths. */
export function writeReport(report: ClusterReport, dir: string): { json: string; svg: string } {
  return writeReportFiles(dir, "cluster", report, plotReport(report));
}
