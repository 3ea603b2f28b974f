/**
 * `snowflock bench fork --backend xen`, in a Xen dom0: time to N running clones of a PVH domU
 * with snowflock's fork, beside the stock way to the same end in the same run — `xl save -c`
 * (a checkpoint: the domain goes on) followed by N × `xl restore` of the saved image — and the
 * ratio. The domU is started from an xl config file (the nested Xen host's test domU by default).
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { SnowflockError } from "../errors.ts";
import type { DomainOperations } from "../backend/backend.ts";
import { forkDomain } from "../clone/domain-fork.ts";
import { formatSize } from "../size.ts";
import { runDir } from "../run-dir.ts";
import { defaultOutDir } from "./fork.ts";
import { fixed, table } from "./format.ts";
import { machineNote, median } from "./machine.ts";
import { linePlot } from "./svg.ts";
import { writeReportFiles } from "./report-files.ts";

export { defaultOutDir };

export interface XenForkBenchOptions {
  clones: number[];
  runs: number;
  /** An xl config file of a PVH domU (its name is replaced). */
  domuConfig: string;
  progress: (line: string) => void;
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
}

export interface XenForkReport {
  benchmark: "snowflock fork --backend xen vs xl save -c + N x xl restore";
  machine: string;
  xen: string;
  memoryBytes: number;
  runs: number;
  rows: XenForkRow[];
}

const PARENT = "sfbench";
const SAVE_FILE = "/var/tmp/snowflock-bench.save";

async function sh(command: string[], what: string): Promise<number> {
  const started = performance.now();
  const child = Bun.spawn(command, { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const [err, status] = await Promise.all([new Response(child.stderr).text(), child.exited]);
  if (status !== 0) throw new SnowflockError("INTERNAL", `${what} failed (${command.join(" ")}): ${err.trim().split("\n").pop()}`);
  return performance.now() - started;
}

const destroy = (name: string) => Bun.spawn(["xl", "destroy", name], { stdout: "ignore", stderr: "ignore" }).exited;

/** A copy of the xl config with another name, for `xl create`/`xl restore`. */
function configNamed(source: string, name: string, dir: string): string {
  const text = readFileSync(source, "utf8").replace(/^\s*name\s*=.*$/m, "");
  const path = join(dir, `${name}.cfg`);
  writeFileSync(path, `${text}\nname = "${name}"\n`);
  return path;
}

/** Starts the parent domU, again if it dies while booting (at most three times); its memory size. */
async function startParent(domains: DomainOperations, config: string, say: (line: string) => void): Promise<number> {
  for (let attempt = 1; ; attempt++) {
    await destroy(PARENT);
    await sh(["xl", "create", config], "starting the parent domU");
    // Until the guest's Xen drivers are up; false if it shut down first (see bootDomU in test/xen:
    // the stock kernel now and then dies in its first instructions under emulation).
    if (await domains.waitReady(PARENT, 600_000)) return (await domains.list()).find((d) => d.name === PARENT)!.memoryBytes;
    if (attempt === 3)
      throw new SnowflockError("VM_STATE", `the parent domU ${PARENT} shut down while booting, three times`, "`xl dmesg` says why");
    say(`the parent domU died while booting (attempt ${attempt}); starting it again`);
  }
}

export async function runXenForkBench(domains: DomainOperations, options: XenForkBenchOptions): Promise<XenForkReport> {
  const dir = join("/var/tmp", "snowflock-bench-xen");
  mkdirSync(dir, { recursive: true });
  const say = options.progress;
  try {
    say("starting the parent domU");
    const memoryBytes = await startParent(domains, configNamed(options.domuConfig, PARENT, dir), say);
    const rows: XenForkRow[] = [];
    for (const n of options.clones) {
      const samples: Array<Omit<XenForkRow, "clones" | "ratio">> = [];
      for (let run = 1; run <= options.runs; run++) {
        say(`N=${n} run ${run}/${options.runs}: snowflock fork`);
        const fork = await forkDomain(domains, PARENT, n, { workDirectory: runDir() });
        for (const c of fork.clones) await destroy(c.name);
        say(`N=${n} run ${run}/${options.runs}: xl save -c + ${n} x xl restore`);
        rmSync(SAVE_FILE, { force: true });
        const xlSaveMs = await sh(["xl", "save", "-c", PARENT, SAVE_FILE], "xl save -c");
        let xlRestoreMs = 0;
        for (let i = 1; i <= n; i++) {
          const name = `${PARENT}-r${i}`;
          await destroy(name);
          xlRestoreMs += await sh(["xl", "restore", configNamed(options.domuConfig, name, dir), SAVE_FILE], "xl restore");
        }
        for (let i = 1; i <= n; i++) await destroy(`${PARENT}-r${i}`);
        rmSync(SAVE_FILE, { force: true });
        samples.push({
          snowflockMs: fork.totalMs,
          shellsMs: fork.eagerCopy?.shellsMs ?? 0,
          parentDownMs: fork.pausedMs,
          xlMs: xlSaveMs + xlRestoreMs,
          xlSaveMs,
          xlRestoreMs,
        });
      }
      const m = (key: keyof (typeof samples)[number]) => median(samples.map((s) => s[key]));
      const row = {
        clones: n,
        snowflockMs: m("snowflockMs"),
        shellsMs: m("shellsMs"),
        parentDownMs: m("parentDownMs"),
        xlMs: m("xlMs"),
        xlSaveMs: m("xlSaveMs"),
        xlRestoreMs: m("xlRestoreMs"),
        ratio: 0,
      };
      row.ratio = row.xlMs / row.snowflockMs;
      rows.push(row);
      say(`N=${n}: snowflock ${fixed(row.snowflockMs / 1000, 2)} s, xl ${fixed(row.xlMs / 1000, 2)} s, ${fixed(row.ratio, 2)}x`);
    }
    return {
      benchmark: "snowflock fork --backend xen vs xl save -c + N x xl restore",
      machine: machineNote(),
      xen: await domains.hypervisor(),
      memoryBytes,
      runs: options.runs,
      rows,
    };
  } finally {
    await destroy(PARENT);
  }
}

const seconds = (ms: number) => fixed(ms / 1000, 2);

export function formatReport(report: XenForkReport): string {
  const lines = [
    report.benchmark,
    `${report.machine}; ${report.xen}; PVH domU of ${formatSize(report.memoryBytes)}; median of ${report.runs} run(s)`,
    "",
  ];
  lines.push(
    ...table(
      ["N", "snowflock s", "shells s", "parent down s", "xl save+restore s", "save s", "restores s", "xl/snowflock"],
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
      { name: "snowflock fork --backend xen", points: report.rows.map((r): [number, number] => [r.clones, r.snowflockMs / 1000]) },
      { name: "xl save -c + N x xl restore", points: report.rows.map((r): [number, number] => [r.clones, r.xlMs / 1000]), dashed: true },
    ],
  });
}

/** Writes xen-fork.json and xen-fork.svg into `dir`; returns their paths. */
export function writeReport(report: XenForkReport, dir: string): { json: string; svg: string } {
  return writeReportFiles(dir, "xen-fork", report, plotReport(report));
}
