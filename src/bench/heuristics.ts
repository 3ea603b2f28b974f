/**
 * The avoidance heuristics (src/heuristics/heuristics.ts), measured: for each workload, `snowflock
 * run WORKLOAD ... --memory ondemand --json` with every heuristic on, each one off alone
 * (`--no-heuristic NAME`, for every name in HEURISTICS) and none (`--no-heuristics`); (a) on one
 * host, the clones fetching on demand from the parent's frozen image, and (b) spread over test
 * hosts (`--cluster`, transport packet by default), clones on h1 also fetching on demand. Per
 * configuration, the median over runs of: pages fetched, pages each heuristic spared
 * (`stats.pagesAvoided`), bytes on the wire (received by the clones, sent by h1's servers), faults,
 * time to the workload's result (the VMM's own `timings.endMs` and the `run` command's wall time),
 * and pages fetched over those of "none" (same workload and placement). Across hosts,
 * `pagesFetched` counts pages fetched by request only; pages a clone received by multicast before
 * it faulted on them are `pagesMulticast`, and "in" (their sum) is compared with "none" too. Every run's console is
 * checked against the answer computed on this host; a run that differs or fails is marked (and
 * left out of the medians), and the command then exits 1.
 *
 *   snowflock bench heuristics [--workloads sha256-par,search-par,alloc-par] [--size 16M] [--clones 4]
 *                              [--mem 128M] [--runs 3] [--hosts 3] [--transport packet] [--seed 7]
 *                              [--json] [--out DIR]
 *   bun bin/snowflock.ts bench heuristics [same options]   (from source)
 *
 * `--hosts 0` skips the cross-host part. One `cluster up` (prefix `sfh<pid>`, a private
 * SNOWFLOCK_RUN_DIR) serves all cross-host runs and is removed with `cluster down` after them,
 * and on error or Ctrl-C.
 */
import type { RemoteTransport } from "../clone/fork-result.ts";
import { SnowflockError } from "../errors.ts";
import { HEURISTICS } from "../heuristics/heuristics.ts";
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
  openSession,
  ownPrefix,
  progress,
  progressDone,
  RUN_TIMEOUT_MS,
  type Session,
  settle,
  stopwatch,
} from "./session.ts";
import { writeReportFiles } from "./report-files.ts";

export { defaultOutDir };

export type HeuristicsWorkload = "sha256-par" | "search-par" | "alloc-par";
export const HEURISTICS_WORKLOADS: HeuristicsWorkload[] = ["sha256-par", "search-par", "alloc-par"];

export interface HeuristicsBenchOptions {
  workloads: HeuristicsWorkload[];
  sizeBytes: number;
  clones: number;
  memoryBytes: number;
  runs: number;
  /** Test hosts for the cross-host part; 0 skips it. */
  hosts: number;
  transport: RemoteTransport;
  seed: number;
}

/** One configuration of the heuristics: which are off, and the `run` options that say so. */
export interface Configuration {
  name: string;
  off: string[];
  args: string[];
}

/** All on, each off alone (from HEURISTICS, so a heuristic added later is measured too), none. */
export function configurations(): Configuration[] {
  return [
    { name: "all", off: [], args: [] },
    ...HEURISTICS.map((h): Configuration => ({ name: `no ${h}`, off: [h], args: ["--no-heuristic", h] })),
    { name: "none", off: [...HEURISTICS], args: ["--no-heuristics"] },
  ];
}

export type Placement = "one host" | "cluster";

/** One `snowflock run`: what it measured, or why it does not count. */
export interface RunSample {
  ok: boolean;
  error?: string;
  /** Spawn to exit of the `run` command (includes Bun's start and, with --cluster, re-running inside h1's namespace). */
  wallMs: number;
  /** VMM process start to the guest's end (`timings.endMs`). */
  endMs: number;
  pagesFetched: number;
  pagesMulticast: number;
  /** pagesFetched + pagesMulticast: pages that reached the clones over the network. */
  pagesIn: number;
  pagesAvoided: Record<string, number>;
  faults: number;
  bytesReceived: number;
  serverBytesSent: number;
  /** After the run command exited, how long a VM of it was still running; the next run waits for that. */
  lingerMs: number;
  /** Clones per host ("local" without --cluster). */
  placement: Record<string, number>;
  remoteClones: number;
}

const NUMERIC = [
  "wallMs",
  "endMs",
  "pagesFetched",
  "pagesMulticast",
  "pagesIn",
  "faults",
  "bytesReceived",
  "serverBytesSent",
  "remoteClones",
] as const;
type NumericKey = (typeof NUMERIC)[number];

export interface HeuristicsRow extends Record<NumericKey, number> {
  workload: HeuristicsWorkload;
  placement: Placement;
  /** 1 for one host; else the test hosts the clones were spread over. */
  hosts: number;
  transport?: RemoteTransport;
  config: string;
  off: string[];
  okRuns: number;
  /** Median pages spared, per heuristic. */
  pagesAvoided: Record<string, number>;
  /** Median pages fetched over the median of the "none" configuration (same workload and placement). */
  fetchedVsNone: number;
  /** Pages fetched + pages received by multicast, over the same for "none". */
  pagesInVsNone: number;
  /** Clones per host in the first good run. */
  clonesPerHost: Record<string, number>;
  errors: string[];
  /** Oddities that do not fail the run (e.g. a heuristic that was off but counted pages). */
  notes: string[];
  samples: RunSample[];
}

export interface HeuristicsReport {
  benchmark: string;
  machine: string;
  command: string;
  runs: number;
  workloads: HeuristicsWorkload[];
  sizeBytes: number;
  memoryBytes: number;
  clones: number;
  hosts: number;
  transport: RemoteTransport;
  seed: number;
  heuristics: string[];
  configurations: Configuration[];
  startedAt: string;
  durationMs: number;
  /** Runs whose console differed from the host's answer, or that failed. */
  badRuns: number;
  results: HeuristicsRow[];
}

// ---------------------------------------------------------------------------------------------
// Running the CLI.

const EMPTY: Omit<RunSample, "ok" | "wallMs" | "lingerMs"> = {
  endMs: NaN,
  pagesFetched: NaN,
  pagesMulticast: NaN,
  pagesIn: NaN,
  pagesAvoided: {},
  faults: NaN,
  bytesReceived: NaN,
  serverBytesSent: NaN,
  placement: {},
  remoteClones: NaN,
};

/** One `snowflock run WORKLOAD ... --memory ondemand --json` in a configuration, with or without --cluster; checks its console. */
async function runOnce(
  session: Session,
  options: HeuristicsBenchOptions,
  workload: HeuristicsWorkload,
  config: Configuration,
  expected: string[],
  cluster: boolean,
): Promise<RunSample> {
  // A name of its own per run: a clone of the previous run may still be ending on its host.
  const name = `hbench${++session.runs}`;
  const args = [
    "run",
    workload,
    `size=${options.sizeBytes}`,
    `seed=${options.seed}`,
    `clones=${options.clones}`,
    "--mem",
    String(options.memoryBytes),
    "--max-clones",
    String(Math.max(32, options.clones)),
    "--memory",
    "ondemand",
    "--name",
    name,
    "--json",
    ...config.args,
  ];
  if (cluster) args.push("--cluster", session.inventory, "--transport", options.transport);
  const r = await cli(session, args, RUN_TIMEOUT_MS);
  const lingerMs = await settle(session);
  const checked = checkRun(r, options.clones, expected);
  if ("error" in checked) return { ok: false, error: checked.error, wallMs: r.wallMs, lingerMs, ...EMPTY };
  const { result, placement, remoteClones, problems } = checked;
  const stats = result.stats;
  const sample: RunSample = {
    ok: true,
    wallMs: r.wallMs,
    lingerMs,
    endMs: result.timings.endMs,
    pagesFetched: stats.pagesFetched,
    pagesMulticast: stats.pagesMulticast ?? 0,
    pagesIn: stats.pagesFetched + (stats.pagesMulticast ?? 0),
    pagesAvoided: { ...(stats.pagesAvoided ?? {}) },
    faults: stats.faults,
    bytesReceived: stats.bytesReceived,
    serverBytesSent: stats.serverBytesSent,
    placement,
    remoteClones,
  };
  return problems.length > 0 ? { ...sample, ok: false, error: problems.join("; ") } : sample;
}

/** The heuristics a report shows: HEURISTICS, then any other name the runs counted pages for. */
function heuristicNames(samples: RunSample[]): string[] {
  const names: string[] = [...HEURISTICS];
  for (const s of samples) for (const name of Object.keys(s.pagesAvoided)) if (!names.includes(name)) names.push(name);
  return names;
}

function summarize(samples: RunSample[], names: string[]): Pick<HeuristicsRow, NumericKey | "okRuns" | "pagesAvoided"> {
  const ok = samples.filter((s) => s.ok);
  const m = (values: number[]) => (values.length ? median(values) : NaN);
  const numbers = Object.fromEntries(NUMERIC.map((key) => [key, m(ok.map((s) => s[key]))])) as Record<NumericKey, number>;
  const pagesAvoided = Object.fromEntries(
    names.map((name) => [name, m(ok.map((s) => s.pagesAvoided[name] ?? NaN).filter(Number.isFinite))]),
  );
  return { okRuns: ok.length, ...numbers, pagesAvoided };
}

// ---------------------------------------------------------------------------------------------

/** Runs the whole sweep; the test hosts it made are gone after, also on error or a signal. */
export async function runHeuristicsBench(options: HeuristicsBenchOptions): Promise<HeuristicsReport> {
  if (options.hosts > 0 && process.getuid?.() !== 0) {
    throw new SnowflockError(
      "USAGE",
      "bench heuristics makes test hosts (network namespaces) and needs root",
      "run it as root, or pass --hosts 0 for the one-host part only",
    );
  }
  const prefix = options.hosts > 0 ? await ownPrefix("h") : `sfh${process.pid % 1000}`;
  const session = openSession("heuristics", prefix);
  const started = performance.now();
  const elapsed = stopwatch(started);
  const failures = new FailedRuns();
  const configs = configurations();
  try {
    const expected = new Map<HeuristicsWorkload, string[]>();
    for (const workload of options.workloads) {
      progress(
        `[${elapsed()}] computing the expected ${workload} answer for ${formatSize(options.sizeBytes)} seed ` +
          `${options.seed}, ${options.clones} clones on this host`,
      );
      expected.set(workload, expectedConsole(workload, options.seed, options.sizeBytes)(options.clones));
    }

    const results: HeuristicsRow[] = [];
    /** Every workload × configuration in one placement, runs interleaved over the configurations. */
    const sweep = async (placement: Placement) => {
      const cluster = placement === "cluster";
      const where = cluster ? `${options.hosts} hosts, ${options.transport}` : "one host";
      const first = options.workloads[0]!;
      progress(`[${elapsed()}] ${where}: warm-up run`);
      failures.record(`${where} warm-up`, await runOnce(session, options, first, configs[0]!, expected.get(first)!, cluster));
      for (const workload of options.workloads) {
        const samples = new Map(configs.map((c) => [c.name, [] as RunSample[]]));
        for (let run = 1; run <= options.runs; run++) {
          for (const config of configs) {
            progress(`[${elapsed()}] ${where}, ${workload}, heuristics ${config.name}: run ${run}/${options.runs}`);
            const sample = await runOnce(session, options, workload, config, expected.get(workload)!, cluster);
            failures.record(`${where}, ${workload}, heuristics ${config.name}, run ${run}`, sample);
            samples.get(config.name)!.push(sample);
          }
        }
        const names = heuristicNames([...samples.values()].flat());
        const rows = configs.map((config): HeuristicsRow => {
          const mine = samples.get(config.name)!;
          const notes: string[] = [];
          for (const h of config.off) {
            const counted = mine.filter((s) => s.ok && (s.pagesAvoided[h] ?? 0) > 0);
            if (counted.length) notes.push(`${h} was off but spared ${counted[0]!.pagesAvoided[h]} page(s)`);
          }
          return {
            workload,
            placement,
            hosts: cluster ? options.hosts : 1,
            ...(cluster ? { transport: options.transport } : {}),
            config: config.name,
            off: config.off,
            ...summarize(mine, names),
            fetchedVsNone: NaN,
            pagesInVsNone: NaN,
            clonesPerHost: mine.find((s) => s.ok)?.placement ?? {},
            errors: mine.flatMap((s) => (s.error ? [s.error] : [])),
            notes,
            samples: mine,
          };
        });
        const none = rows.find((r) => r.config === "none")!;
        for (const row of rows) {
          row.fetchedVsNone = row.pagesFetched / none.pagesFetched;
          row.pagesInVsNone = row.pagesIn / none.pagesIn;
        }
        results.push(...rows);
      }
    };

    await sweep("one host");
    if (options.hosts > 0) {
      const maxClones = Math.max(16, options.clones);
      progress(`[${elapsed()}] cluster up: ${options.hosts} test hosts (prefix ${prefix}, --max-clones ${maxClones})`);
      await clusterUp(session, options.hosts, maxClones);
      try {
        await sweep("cluster");
      } finally {
        progress(`[${elapsed()}] cluster down`);
        await clusterDown(session);
      }
    }
    return {
      benchmark:
        `heuristics: ${options.workloads.join(", ")} size=${formatSize(options.sizeBytes)} ` +
        `seed=${options.seed} clones=${options.clones} in a ${formatSize(options.memoryBytes)} guest, ` +
        `--memory ondemand; one ` +
        `host${options.hosts > 0 ? ` and ${options.hosts} test hosts (network namespaces on this machine, transport ${options.transport})` : ""}`,
      machine: machineNote(),
      command:
        `snowflock bench heuristics --workloads ${options.workloads.join(",")} --size ` +
        `${formatSize(options.sizeBytes)} --clones ${options.clones} --mem ${formatSize(options.memoryBytes)} ` +
        `--runs ${options.runs} --hosts ${options.hosts} --transport ${options.transport} --seed ` +
        `${options.seed}`,
      runs: options.runs,
      workloads: options.workloads,
      sizeBytes: options.sizeBytes,
      memoryBytes: options.memoryBytes,
      clones: options.clones,
      hosts: options.hosts,
      transport: options.transport,
      seed: options.seed,
      heuristics: heuristicNames(results.flatMap((r) => r.samples)),
      configurations: configs,
      startedAt: new Date(Date.now() - (performance.now() - started)).toISOString(),
      durationMs: performance.now() - started,
      badRuns: failures.count,
      results,
    };
  } finally {
    progressDone();
    session.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Output.

const ratio = (n: number) => (Number.isFinite(n) ? (n >= 0.01 || n === 0 ? `${n.toFixed(2)}x` : `${n.toPrecision(2)}x`) : "-");

const placementTitle = (report: HeuristicsReport, placement: Placement) =>
  placement === "one host"
    ? "one host (clones fetch on demand from the parent's frozen image)"
    : `${report.hosts} test hosts, transport ${report.transport} (clones on h1 too fetch on demand)`;

/** The report as text: one table per workload × placement. */
export function formatReport(report: HeuristicsReport): string {
  const lines = [
    report.benchmark,
    `${report.machine}; median of ${report.runs} run${report.runs > 1 ? "s" : ""}; ${(report.durationMs / 60_000).toFixed(1)} min`,
    "fetched = pages the clones fetched; vs none = fetched / fetched with --no-heuristics; avoided NAME = pages that heuristic spared;",
    "mcast = pages received by multicast before a fault (not in fetched); in = fetched + mcast;",
    "recv MB = bytes the clones received (MiB); sent MB = bytes h1's memory servers sent; result = VMM " +
      "start to the guest's end (timings.endMs); wall = the run command, spawn to exit.",
  ];
  for (const workload of report.workloads) {
    for (const placement of ["one host", "cluster"] as const) {
      const rows = report.results.filter((r) => r.workload === workload && r.placement === placement);
      if (rows.length === 0) continue;
      const spread =
        placement === "cluster"
          ? Object.entries(rows.find((r) => Object.keys(r.clonesPerHost).length)?.clonesPerHost ?? {})
              .map(([h, n]) => `${h}:${n}`)
              .join(" ")
          : "";
      lines.push("", `${workload}, ${placementTitle(report, placement)}${spread ? `; clones per host ${spread}` : ""}`);
      lines.push(
        ...table(
          [
            "heuristics",
            "fetched",
            "vs none",
            ...(placement === "cluster" ? ["mcast", "in", "in vs none"] : []),
            ...report.heuristics.map((h) => `avoided ${h}`),
            "faults",
            "recv MB",
            "sent MB",
            "result ms",
            "wall ms",
            "ok",
          ],
          rows.map((r) => [
            r.config,
            whole(r.pagesFetched),
            ratio(r.fetchedVsNone),
            ...(placement === "cluster" ? [whole(r.pagesMulticast), whole(r.pagesIn), ratio(r.pagesInVsNone)] : []),
            ...report.heuristics.map((h) => whole(r.pagesAvoided[h] ?? NaN)),
            whole(r.faults),
            mb(r.bytesReceived),
            mb(r.serverBytesSent),
            fixed(r.endMs),
            fixed(r.wallMs),
            `${r.okRuns}/${r.samples.length}${r.errors.length ? " MISMATCH" : ""}`,
          ]),
          1,
        ),
      );
    }
  }
  const notes = report.results.flatMap((r) => r.notes.map((n) => `  ${r.workload}, ${r.placement}, ${r.config}: ${n}`));
  if (notes.length) lines.push("", "notes:", ...notes);
  const bad = report.results.filter((r) => r.errors.length);
  if (report.badRuns > 0 || bad.length > 0) {
    lines.push("", `${report.badRuns} run(s) failed or printed a wrong answer (left out of the medians; warm-up runs count too):`);
    for (const r of bad) for (const e of r.errors) lines.push(`  ${r.workload}, ${r.placement}, ${r.config}: ${e}`);
  }
  return `${lines.join("\n")}\n`;
}

const escapeXml = (text: string) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
const CONFIG_COLORS = ["#2ca02c", "#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#e377c2", "#7f7f7f"];

/**
 * A grouped bar chart: one group per workload × placement, one bar per configuration, its height
 * the pages fetched relative to "none" (so workloads of different sizes share an axis), the
 * absolute count above it. The "none" bar is always 1 (grey).
 */
export function plotReport(report: HeuristicsReport): string {
  const configs = report.configurations.map((c) => c.name);
  const color = (name: string, i: number) => (name === "none" ? "#7f7f7f" : CONFIG_COLORS[i % CONFIG_COLORS.length]!);
  const groups = report.workloads.flatMap((w) =>
    (["one host", "cluster"] as const)
      .map((p) => ({
        label: `${w}, ${p === "one host" ? "one host" : `${report.hosts} hosts`}`,
        rows: report.results.filter((r) => r.workload === w && r.placement === p),
      }))
      .filter((g) => g.rows.length > 0),
  );
  const bar = 22;
  const gap = 28;
  const groupW = configs.length * bar + gap;
  const left = 64;
  const top = 96; // room above the tallest bar for its rotated label
  const plotH = 300;
  const legendW = 40 + Math.max(...configs.map((c) => c.length)) * 7 + 40;
  const plotW = Math.max(groups.length * groupW, 240);
  const title =
    `Pages fetched relative to no heuristics (${formatSize(report.sizeBytes)}, ${report.clones} clones, ` + `median of ${report.runs})`;
  const width = Math.max(left + plotW + 24 + legendW, title.length * 8 + 40, report.machine.length * 7 + 40);
  const height = top + plotH + 70;
  const values = report.results.map((r) => r.fetchedVsNone).filter(Number.isFinite);
  const yMax = Math.max(1, Math.ceil(Math.max(0, ...values) * 4) / 4);
  const py = (v: number) => top + plotH - (Math.min(v, yMax) / yMax) * plotH;
  const f = (n: number) => (Math.round(n * 10) / 10).toString();
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ` +
      `${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${escapeXml(title)}</text>`,
    `<text x="${width / 2}" y="40" text-anchor="middle" fill="#555">${escapeXml(report.machine)}</text>`,
  ];
  const steps =
    yMax <= 1
      ? [0, 0.25, 0.5, 0.75, 1]
      : Array.from({ length: Math.round(yMax / 0.25) + 1 }, (_, i) => i * 0.25).filter((_, i, a) => a.length <= 9 || i % 2 === 0);
  for (const v of steps) {
    out.push(`<line x1="${left}" x2="${left + plotW}" y1="${f(py(v))}" y2="${f(py(v))}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${left - 6}" y="${f(py(v))}" text-anchor="end" dominant-baseline="middle">${v}</text>`);
  }
  out.push(`<path d="M${left} ${top}V${top + plotH}H${left + plotW}" fill="none" stroke="black"/>`);
  out.push(
    `<text transform="translate(18 ${top + plotH / 2}) rotate(-90)" text-anchor="middle">pages fetched / pages fetched with none</text>`,
  );
  groups.forEach((g, gi) => {
    const x0 = left + gap / 2 + gi * groupW;
    configs.forEach((name, ci) => {
      const row = g.rows.find((r) => r.config === name);
      if (!row) return;
      const x = x0 + ci * bar;
      const v = row.fetchedVsNone;
      if (Number.isFinite(v)) {
        const y = py(v);
        out.push(
          `<rect x="${f(x + 1)}" y="${f(y)}" width="${bar - 2}" height="${f(top + plotH - y)}" ` +
            `fill="${color(name, ci)}"><title>${escapeXml(`${g.label}, ${name}: ${whole(row.pagesFetched)} pages (${ratio(v)})`)}</title></rect>`,
        );
        out.push(
          `<text transform="translate(${f(x + bar / 2 + 4)} ${f(y - 4)}) rotate(-90)" font-size="10">${whole(row.pagesFetched)}</text>`,
        );
      } else {
        out.push(`<text x="${f(x + bar / 2)}" y="${top + plotH - 4}" text-anchor="middle" font-size="10" fill="#d62728">x</text>`);
      }
    });
    out.push(
      `<text x="${f(x0 + (configs.length * bar) / 2)}" y="${top + plotH + 18}" ` +
        `text-anchor="middle">${escapeXml(g.label.split(", ")[0]!)}</text>`,
    );
    out.push(
      `<text x="${f(x0 + (configs.length * bar) / 2)}" y="${top + plotH + 34}" text-anchor="middle" ` +
        `fill="#555">${escapeXml(g.label.split(", ")[1]!)}</text>`,
    );
  });
  configs.forEach((name, ci) => {
    const lx = left + plotW + 24;
    const ly = top + 12 + ci * 18;
    out.push(`<rect x="${lx}" y="${ly - 6}" width="24" height="12" fill="${color(name, ci)}"/>`);
    out.push(`<text x="${lx + 30}" y="${ly}" dominant-baseline="middle">${escapeXml(name === "all" ? "all on" : name)}</text>`);
  });
  out.push(
    `<text x="${left + plotW / 2}" y="${height - 10}" text-anchor="middle" fill="#555">bar labels: pages ` +
      `fetched (all clones); x: no good run</text>`,
  );
  out.push("</svg>");
  return `${out.join("\n")}\n`;
}

/** Writes heuristics.json and heuristics.svg into `dir`; returns their paths. */
export function writeReport(report: HeuristicsReport, dir: string): { json: string; svg: string } {
  return writeReportFiles(dir, "heuristics", report, plotReport(report));
}
