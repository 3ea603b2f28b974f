/**
 * `snowflock bench fork --backend xen`, in a Xen dom0: time to N running clones of a PVH domU
 * with snowflock's fork — eager (a copy of the memory up front) and, where Xen pages, on demand
 * (through the agent, which keeps the clones' pagers: one is started for the bench when none
 * runs) — beside the stock way to the same end in the same run: `xl save -c` (a checkpoint: the
 * domain goes on) followed by N × `xl restore` of the saved image, and the ratios. The domU is
 * started from an xl config file (the nested Xen host's test domU by default) at the memory asked.
 */
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { SnowflockError } from "../errors.ts";
import type { DomainOperations, PoolResult } from "../backend/backend.ts";
import { forkDomain } from "../clone/domain-fork.ts";
import type { ForkResult } from "../clone/fork-result.ts";
import { forkThroughAgent, pagedClonesOfAgent, poolThroughAgent } from "../cluster/agent-socket.ts";
import { formatSize } from "../size.ts";
import { runDir } from "../run-dir.ts";
import { defaultOutDir } from "./fork.ts";
import { fixed, table } from "./format.ts";
import { machineNote, median } from "./machine.ts";
import { linePlot } from "./svg.ts";
import { writeReportFiles } from "./report-files.ts";
import { cliCommand } from "./session.ts";
import { configNamed, destroy, sh, startParent } from "./xen-domu.ts";

export { defaultOutDir };

export interface XenForkBenchOptions {
  clones: number[];
  runs: number;
  /** An xl config file of a PVH domU (its name is replaced, and its memory = maxmem set to memoryBytes). */
  domuConfig: string;
  memoryBytes: number;
  /** The fork paths to measure; "ondemand" where Xen pages (else reported unavailable, with why). */
  memory: Array<"eager" | "ondemand">;
  progress: (line: string) => void;
}

/** On-demand clones: the fork through the agent, and what each clone fetched in its first seconds. */
export interface XenOnDemandFigures {
  /** From the request to the last clone running, paging out the shells included. */
  totalMs: number;
  /** Of that, paging out the clones' shells (the part a pool of ready shells would take out of the fork). */
  pageOutMs: number;
  parentDownMs: number;
  /** Pages each clone fetched (mean) by FETCHED_AFTER_MS after the fork. */
  pagesFetchedPerClone: number;
  /** xlMs / totalMs. */
  ratio: number;
}

export interface XenForkRow {
  clones: number;
  /** snowflock fork: from the request to the last clone running. */
  snowflockMs: number;
  /** Of that, building the clones' domain shells while the parent runs. */
  shellsMs: number;
  /** Of that, the parent suspended (capture, memory copy, resume). */
  parentDownMs: number;
  /** xl save -c, then N sequential xl restore. */
  xlMs: number;
  xlSaveMs: number;
  xlRestoreMs: number;
  /** xlMs / snowflockMs. */
  ratio: number;
  onDemand?: XenOnDemandFigures;
  /** Eager, from shells kept ready (`snowflock pool`, built before the fork). */
  eagerReady?: XenReadyFigures;
  /** On demand, from shells kept ready and paged out before the fork. */
  onDemandReady?: XenReadyFigures & { pagesFetchedPerClone: number; phases: XenOnDemandPhases };
}

/** Where an on-demand fork's time goes: the parent's stop (suspend, capture, resume), then starting the clones. */
export interface XenOnDemandPhases {
  suspendMs: number;
  captureMs: number;
  resumeMs: number;
  startMs: number;
}

/** A fork from shells kept ready, and what making them ready cost (outside the fork). */
export interface XenReadyFigures {
  totalMs: number;
  parentDownMs: number;
  /** `snowflock pool`: building the N shells, and paging them out (on demand), side by side. */
  poolMs: number;
  /** Paging out, per frame of one shell (on demand): the shell-pool build time per page. */
  pageOutMicrosPerFrame?: number;
  /** xlMs / totalMs. */
  ratio: number;
}

export interface XenForkReport {
  benchmark: "snowflock fork --backend xen vs xl save -c + N x xl restore";
  machine: string;
  xen: string;
  memoryBytes: number;
  runs: number;
  /** Why the on-demand columns are missing, when they were asked for. */
  onDemandUnavailable?: string;
  rows: XenForkRow[];
}

const PARENT = "sfbench";
const SAVE_FILE = "/var/tmp/snowflock-bench.save";
/** When on-demand clones' fetched pages are read: they have started and run their first seconds. */
const FETCHED_AFTER_MS = 5_000;
const AGENT_START_MS = 60_000;

const seconds = (ms: number) => fixed(ms / 1000, 2);

/** The host's agent for on-demand forks: the one running, or one started for the bench (stopped by the returned function). */
async function ensureAgent(say: (line: string) => void): Promise<() => Promise<void>> {
  if ("clones" in (await pagedClonesOfAgent(runDir()))) return async () => {};
  say("starting snowflock agent --backend xen for the on-demand forks");
  const agent = Bun.spawn([...cliCommand(), "agent", "--backend", "xen"], { stdin: "ignore", stdout: "ignore", stderr: "pipe" });
  const stop = async () => {
    agent.kill();
    await agent.exited;
  };
  for (const deadline = Date.now() + AGENT_START_MS; Date.now() < deadline; await Bun.sleep(250)) {
    if ("clones" in (await pagedClonesOfAgent(runDir()))) return stop;
    if (agent.exitCode !== null) break;
  }
  await stop();
  const why = (await new Response(agent.stderr).text()).trim().split("\n").pop();
  throw new SnowflockError("CONTROL", `the agent started for the bench never answered${why ? `: ${why}` : ""}`);
}

/** One on-demand fork through the agent; the clones' mean pages fetched once they have run a while. */
async function forkOnDemand(n: number): Promise<{ fork: ForkResult; pagesFetchedPerClone: number }> {
  const fork = await forkThroughAgent(runDir(), PARENT, n, "ondemand");
  await Bun.sleep(FETCHED_AFTER_MS);
  const listed = await pagedClonesOfAgent(runDir());
  const ours = new Set(fork.clones.map((c) => c.domid));
  const fetched = "clones" in listed ? listed.clones.filter((c) => ours.has(c.domid)).map((c) => c.stats.pagesFetched) : [];
  for (const c of fork.clones) await destroy(c.name);
  if (fetched.length !== n) throw new SnowflockError("CONTROL", `the agent listed ${fetched.length} of the ${n} on-demand clones`);
  return { fork, pagesFetchedPerClone: fetched.reduce((a, b) => a + b, 0) / n };
}

/** Shells kept ready for N clones (timed), then the fork that takes them. */
async function forkFromReadyShells(
  domains: DomainOperations,
  n: number,
  memory: "eager" | "ondemand",
): Promise<{ fork: ForkResult; pool: PoolResult; poolMs: number; pagesFetchedPerClone: number }> {
  const started = performance.now();
  const pool =
    memory === "ondemand"
      ? await poolThroughAgent(runDir(), PARENT, n, "ondemand")
      : await domains.pool(PARENT, n, { memory: "eager", workDirectory: runDir() });
  const poolMs = performance.now() - started;
  if (memory === "ondemand") {
    const { fork, pagesFetchedPerClone } = await forkOnDemand(n);
    return { fork, pool, poolMs, pagesFetchedPerClone };
  }
  const fork = await forkDomain(domains, PARENT, n, { workDirectory: runDir() });
  for (const c of fork.clones) await destroy(c.name);
  return { fork, pool, poolMs, pagesFetchedPerClone: 0 };
}

/** Every measurement of one run at one N. */
interface XenSample {
  eager: ForkResult;
  onDemand?: { fork: ForkResult; pagesFetchedPerClone: number };
  eagerReady: Awaited<ReturnType<typeof forkFromReadyShells>>;
  onDemandReady?: Awaited<ReturnType<typeof forkFromReadyShells>>;
  xlSaveMs: number;
  xlRestoreMs: number;
}

export async function runXenForkBench(domains: DomainOperations, options: XenForkBenchOptions): Promise<XenForkReport> {
  const dir = join("/var/tmp", "snowflock-bench-xen");
  mkdirSync(dir, { recursive: true });
  const say = options.progress;
  let onDemandUnavailable: string | undefined;
  let stopAgent = async () => {};
  const config = (name: string) => configNamed(options.domuConfig, name, dir, options.memoryBytes);
  try {
    if (options.memory.includes("ondemand")) {
      try {
        domains.checkMemory("ondemand");
        stopAgent = await ensureAgent(say);
      } catch (error) {
        onDemandUnavailable = (error as Error).message;
        say(`on demand: unavailable (${onDemandUnavailable})`);
      }
    }
    const onDemand = options.memory.includes("ondemand") && !onDemandUnavailable;
    say("starting the parent domU");
    const memoryBytes = await startParent(domains, PARENT, config(PARENT), say);
    const rows: XenForkRow[] = [];
    for (const n of options.clones) {
      const samples: XenSample[] = [];
      const step = (run: number, what: string) => say(`N=${n} run ${run}/${options.runs}: ${what}`);
      for (let run = 1; run <= options.runs; run++) {
        step(run, "snowflock fork (eager)");
        const eager = await forkDomain(domains, PARENT, n, { workDirectory: runDir() });
        for (const c of eager.clones) await destroy(c.name);
        step(run, "snowflock pool, then fork (eager, shells ready)");
        const eagerReady = await forkFromReadyShells(domains, n, "eager");
        let onDemandSample: XenSample["onDemand"];
        let onDemandReady: XenSample["onDemandReady"];
        if (onDemand) {
          step(run, "snowflock fork --memory ondemand");
          onDemandSample = await forkOnDemand(n);
          step(run, "snowflock pool --memory ondemand, then fork --memory ondemand (shells ready)");
          onDemandReady = await forkFromReadyShells(domains, n, "ondemand");
        }
        step(run, `xl save -c + ${n} x xl restore`);
        rmSync(SAVE_FILE, { force: true });
        const xlSaveMs = await sh(["xl", "save", "-c", PARENT, SAVE_FILE], "xl save -c");
        let xlRestoreMs = 0;
        for (let i = 1; i <= n; i++) {
          const name = `${PARENT}-r${i}`;
          await destroy(name);
          xlRestoreMs += await sh(["xl", "restore", config(name), SAVE_FILE], "xl restore");
        }
        for (let i = 1; i <= n; i++) await destroy(`${PARENT}-r${i}`);
        rmSync(SAVE_FILE, { force: true });
        samples.push({ eager, onDemand: onDemandSample, eagerReady, onDemandReady, xlSaveMs, xlRestoreMs });
      }
      const m = (pick: (s: XenSample) => number) => median(samples.map(pick));
      const xlMs = m((s) => s.xlSaveMs + s.xlRestoreMs);
      const ready = (pick: (s: XenSample) => XenSample["eagerReady"]): XenReadyFigures => {
        const totalMs = m((s) => pick(s).fork.totalMs);
        const frames = (s: XenSample) => pick(s).pool.framesPagedOut * n;
        return {
          totalMs,
          parentDownMs: m((s) => pick(s).fork.pausedMs),
          poolMs: m((s) => pick(s).poolMs),
          pageOutMicrosPerFrame: frames(samples[0]!) > 0 ? m((s) => (pick(s).pool.pageOutMs * 1000) / frames(s)) : undefined,
          ratio: xlMs / totalMs,
        };
      };
      const row: XenForkRow = {
        clones: n,
        snowflockMs: m((s) => s.eager.totalMs),
        shellsMs: m((s) => s.eager.eagerCopy?.shellsMs ?? 0),
        parentDownMs: m((s) => s.eager.pausedMs),
        xlMs,
        xlSaveMs: m((s) => s.xlSaveMs),
        xlRestoreMs: m((s) => s.xlRestoreMs),
        ratio: 0,
        eagerReady: ready((s) => s.eagerReady),
      };
      row.ratio = row.xlMs / row.snowflockMs;
      if (onDemand) {
        const totalMs = m((s) => s.onDemand!.fork.totalMs);
        row.onDemand = {
          totalMs,
          pageOutMs: m((s) => s.onDemand!.fork.onDemand?.pageOutMs ?? 0),
          parentDownMs: m((s) => s.onDemand!.fork.pausedMs),
          pagesFetchedPerClone: m((s) => s.onDemand!.pagesFetchedPerClone),
          ratio: row.xlMs / totalMs,
        };
        const phase = (key: keyof XenOnDemandPhases) => m((s) => s.onDemandReady!.fork.onDemand?.[key] ?? 0);
        row.onDemandReady = {
          ...ready((s) => s.onDemandReady!),
          pagesFetchedPerClone: m((s) => s.onDemandReady!.pagesFetchedPerClone),
          phases: { suspendMs: phase("suspendMs"), captureMs: phase("captureMs"), resumeMs: phase("resumeMs"), startMs: phase("startMs") },
        };
      }
      rows.push(row);
      const paged = row.onDemandReady
        ? `, on demand ${seconds(row.onDemand!.totalMs)} s, with shells ready ${seconds(row.onDemandReady.totalMs)} s (${fixed(row.onDemandReady.ratio, 2)}x)`
        : "";
      say(
        `N=${n}: eager ${seconds(row.snowflockMs)} s, with shells ready ${seconds(row.eagerReady!.totalMs)} s${paged}, xl ${seconds(row.xlMs)} s`,
      );
    }
    return {
      benchmark: "snowflock fork --backend xen vs xl save -c + N x xl restore",
      machine: machineNote(),
      xen: await domains.hypervisor(),
      memoryBytes,
      runs: options.runs,
      onDemandUnavailable,
      rows,
    };
  } finally {
    await destroy(PARENT);
    await stopAgent();
  }
}

export function formatReport(report: XenForkReport): string {
  const lines = [
    report.benchmark,
    `${report.machine}; ${report.xen}; PVH domU of ${formatSize(report.memoryBytes)}; median of ${report.runs} run(s)`,
    "",
  ];
  lines.push(
    ...table(
      ["N", "eager s", "shells s", "parent down s", "xl save+restore s", "save s", "restores s", "xl/eager"],
      report.rows.map((r) => [
        String(r.clones),
        seconds(r.snowflockMs),
        seconds(r.shellsMs),
        seconds(r.parentDownMs),
        seconds(r.xlMs),
        seconds(r.xlSaveMs),
        seconds(r.xlRestoreMs),
        `${fixed(r.ratio, 2)}x`,
      ]),
    ),
  );
  if (report.onDemandUnavailable) lines.push("", `on demand: unavailable (${report.onDemandUnavailable})`);
  const pages = report.memoryBytes / 4096;
  const fetched = (n: number) => `${Math.round(n)} (${fixed((100 * n) / pages, 1)}%)`;
  const ratio = (r: number) => `${fixed(r, 2)}x`;
  const paged = report.rows.some((r) => r.onDemand);
  lines.push(
    "",
    "with shells kept ready (snowflock pool, before the fork)" +
      (paged ? `; on demand through the agent, pages fetched ${FETCHED_AFTER_MS / 1000} s after the fork, of ${pages}` : "") +
      ":",
    ...table(
      [
        "N",
        "eager ready s",
        "pool s",
        "xl/eager ready",
        ...(paged
          ? ["on demand s", "page-out s", "ready s", "pool s", "page-out µs/frame", "parent down s", "fetched/clone", "xl/on demand ready"]
          : []),
      ],
      report.rows.map((r) => {
        const e = r.eagerReady;
        const o = r.onDemand;
        const or = r.onDemandReady;
        return [
          String(r.clones),
          e ? seconds(e.totalMs) : "-",
          e ? seconds(e.poolMs) : "-",
          e ? ratio(e.ratio) : "-",
          ...(paged
            ? [
                o ? seconds(o.totalMs) : "-",
                o ? seconds(o.pageOutMs) : "-",
                or ? seconds(or.totalMs) : "-",
                or ? seconds(or.poolMs) : "-",
                or?.pageOutMicrosPerFrame !== undefined ? fixed(or.pageOutMicrosPerFrame, 0) : "-",
                or ? seconds(or.parentDownMs) : "-",
                or ? fetched(or.pagesFetchedPerClone) : "-",
                or ? ratio(or.ratio) : "-",
              ]
            : []),
        ];
      }),
    ),
  );
  const phased = report.rows.filter((r) => r.onDemandReady?.phases);
  if (phased.length > 0)
    lines.push(
      "",
      "on demand with shells ready, where the time goes (parent down = suspend + capture + resume; start: each clone's context, eager frames, unpause):",
      ...table(
        ["N", "suspend s", "capture s", "resume s", "start s"],
        phased.map((r) => {
          const p = r.onDemandReady!.phases;
          return [String(r.clones), seconds(p.suspendMs), seconds(p.captureMs), seconds(p.resumeMs), seconds(p.startMs)];
        }),
      ),
    );
  return `${lines.join("\n")}\n`;
}

export function plotReport(report: XenForkReport): string {
  return linePlot({
    title: `Xen: time to N running clones of a ${formatSize(report.memoryBytes)} PVH domU (median of ${report.runs})`,
    subtitle: `${report.machine}; ${report.xen}`,
    xLabel: "clones N (log2 scale)",
    yLabel: "seconds to all N running",
    xLog2: true,
    series: [
      { name: "snowflock fork (eager)", points: report.rows.map((r): [number, number] => [r.clones, r.snowflockMs / 1000]) },
      ...(
        [
          ["snowflock fork (eager), shells ready", (r: XenForkRow) => r.eagerReady?.totalMs],
          ["snowflock fork --memory ondemand", (r: XenForkRow) => r.onDemand?.totalMs],
          ["snowflock fork --memory ondemand, shells ready", (r: XenForkRow) => r.onDemandReady?.totalMs],
        ] as const
      )
        .map(([name, pick]) => ({
          name,
          points: report.rows.flatMap((r): Array<[number, number]> => (pick(r) === undefined ? [] : [[r.clones, pick(r)! / 1000]])),
        }))
        .filter((series) => series.points.length > 0),
      { name: "xl save -c + N x xl restore", points: report.rows.map((r): [number, number] => [r.clones, r.xlMs / 1000]), dashed: true },
    ],
  });
}

/** Writes xen-fork.json and xen-fork.svg into `dir`; returns their paths. */
export function writeReport(report: XenForkReport, dir: string): { json: string; svg: string } {
  return writeReportFiles(dir, "xen-fork", report, plotReport(report));
}
