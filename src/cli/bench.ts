/** `snowflock bench fork`: the fork benchmark (bench/fork.ts) beside QEMU, as a command. */
import type { CAC } from "cac";
import { SnowflockError } from "../errors.ts";
import { MAX_CLONES_PER_FORK } from "../vmm/protocol.ts";
import { memoryOption } from "./options.ts";
import { log, printJson, printLine } from "./output.ts";

interface BenchOptions {
  clones: string | number;
  mem: string;
  runs: string | number;
  memory: string;
  peer: boolean;
  peerMax: string | number;
  json?: boolean;
  out?: string;
}

function listOption(value: unknown): string[] {
  return String(value).split(",").map((s) => s.trim()).filter(Boolean);
}

function wholeNumber(option: string, value: unknown, max: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > max) throw new SnowflockError("USAGE", `bad ${option} '${value}'`, `give whole numbers from 1 to ${max}`);
  return n;
}

export function registerBench(cli: CAC): void {
  cli
    .command("bench <benchmark>", "Run a benchmark: fork (time to N running clones, beside QEMU save/restore)")
    .option("--clones <list>", "Clone counts N, comma-separated", { default: "1,2,4,8,16,32" })
    .option("--mem <size>", "Guest memory of the parent VM", { default: "1G" })
    .option("--runs <n>", "Runs per N (the median is reported)", { default: 3 })
    .option("--memory <list>", "Fork memory paths, comma-separated: cow, ondemand (one the VMM refuses is reported unavailable)", { default: "cow" })
    .option("--no-peer", "Skip the QEMU peer")
    .option("--peer-max <n>", "Largest N the QEMU peer runs (a process per restored VM)", { default: 32 })
    .option("--json", "Print the report as JSON")
    .option("--out <dir>", "Where fork.json and fork.svg go (default: bench/results in the repo, else .)")
    .example((bin) => `  ${bin} bench fork --clones 1,4,16 --runs 5`)
    .action(async (benchmark: string, options: BenchOptions) => {
      if (benchmark !== "fork") throw new SnowflockError("USAGE", `unknown benchmark '${benchmark}'`, "the benchmarks are: fork");
      const clones = [...new Set(listOption(options.clones).map((n) => wholeNumber("--clones", n, MAX_CLONES_PER_FORK)))].sort((a, b) => a - b);
      const memoryPaths = [...new Set(listOption(options.memory))];
      if (clones.length === 0 || memoryPaths.length === 0) throw new SnowflockError("USAGE", "--clones and --memory need at least one value");
      const bench = await import("../../bench/fork.ts");
      const report = await bench.runForkBench({
        clones,
        memoryBytes: memoryOption(options.mem),
        runs: wholeNumber("--runs", options.runs, 1000),
        memoryPaths,
        peer: options.peer !== false,
        peerMaxClones: wholeNumber("--peer-max", options.peerMax, MAX_CLONES_PER_FORK),
      });
      const paths = bench.writeReport(report, options.out === undefined ? bench.defaultOutDir() : String(options.out));
      if (options.json) printJson(report);
      else printLine(bench.formatReport(report));
      log.success(`wrote ${paths.json} and ${paths.svg}`);
      return report.snowflock.some((p) => p.available) ? 0 : 1;
    });
}
