/**
 * `snowflock bench fork`: the fork benchmark (src/bench/fork.ts) beside QEMU, as a command; with
 * `--backend xen` (in a Xen dom0), fork of a PVH domU beside xl save/restore (src/bench/xen-fork.ts).
 * `snowflock bench cluster`: clones spread over test hosts, multicast vs unicast (src/bench/cluster.ts);
 * with `--backend xen`, a domU's clones over a cluster's dom0s (src/bench/xen-cluster.ts).
 * `snowflock bench heuristics`: pages fetched with each avoidance heuristic on/off, one host and
 * across test hosts (src/bench/heuristics.ts).
 * `snowflock bench soak`: many fork/kill cycles, locally and across test hosts, with the host's
 * descriptors, memory, processes, run-directory entries and D-state tasks before and after (src/bench/soak.ts).
 * `snowflock bench overhead`: a compute-bound workload in clones (each memory path, and on another
 * test host) against the VM with all memory present (src/bench/overhead.ts).
 *
 * Options shared by the benchmarks have no cac default: each benchmark applies its own (below).
 */
import type { CAC } from "cac";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { type BenchGuest, kernelCmdline } from "../bench/bench-guest.ts";
import { readKernelGuest } from "../guest/kernel-guest.ts";
import { SnowflockError } from "../errors.ts";
import { MAX_POOL_SIZE } from "../pool/keeper.ts";
import { MAX_CLONES_PER_FORK } from "../vmm/protocol.ts";
import { parseSize } from "../size.ts";
import { TEST_HOST_MTU } from "../cluster/test-hosts.ts";
import type { DomainOperations } from "../backend/backend.ts";
import { clusterOfThisHost } from "./cluster-option.ts";
import { selectBackend } from "../backend/select.ts";
import { memoryOption, memoryPathOption, transportOption } from "./options.ts";
import { log, printJson, printLine } from "../output.ts";

interface BenchOptions {
  clones?: string | number;
  mem?: string;
  runs?: string | number;
  memory?: string;
  peer: boolean;
  peerMax: string | number;
  pool?: string | number;
  json?: boolean;
  out?: string;
  hosts?: string | number;
  transport?: string;
  workloads: string;
  workload: string;
  size?: string | number;
  passes?: string | number;
  rounds?: string | number;
  seed: string | number;
  backend?: string;
  domuConfig?: string;
  inventory?: string;
  cycles: string | number;
  crossCycles: string | number;
  mtu: string | number;
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  ready?: string;
}

const BENCHMARKS = ["fork", "cluster", "heuristics", "soak", "overhead"];

/** Per-benchmark defaults of the options they share. */
const DEFAULTS = {
  fork: { clones: "1,2,4,8,16,32", runs: 3, mem: "1G", memory: "cow" },
  cluster: { clones: "1,2,4,8,16,32", runs: 3, mem: "64M", hosts: "1,2,4,8", transport: "packet,tcp" },
  heuristics: { clones: 4, runs: 3, mem: "128M", hosts: 3, transport: "packet" },
  soak: { clones: 1, mem: "64M", hosts: 2, transport: "packet", memory: "cow" },
  overhead: { runs: 5, mem: "64M", hosts: 2, transport: "packet", memory: "cow,ondemand", size: "1M", passes: 16, rounds: 8 },
  dataset: { size: "16M" },
  xen: {
    clones: "1,2,4,8",
    runs: 3,
    mem: "256M",
    memory: ["eager", "ondemand"] as Array<"eager" | "ondemand">,
    hosts: "1,2",
    transport: "tcp,packet",
    domuConfig: () => join(process.env.SNOWFLOCK_XEN_DOMU_DIR ?? "/usr/local/share/snowflock-xen/domu", "pvh.cfg"),
  },
};

function listOption(value: unknown): string[] {
  return String(value)
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
}

function wholeNumber(option: string, value: unknown, max: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > max)
    throw new SnowflockError("USAGE", `bad ${option} '${value}'`, `give whole numbers from 1 to ${max}`);
  return n;
}

export function registerBench(cli: CAC): void {
  cli
    .command(
      "bench <benchmark>",
      "Run a benchmark: fork (time to N running clones and the CPU per clone, beside QEMU save/restore); cluster (clones spread " +
        "over test hosts: time, server bytes, multicast vs unicast, overhead vs one host); heuristics (pages " +
        "fetched, bytes and time with each avoidance heuristic on/off, on one host and across test hosts); " +
        "soak (fork/kill cycles: the host's fds, RSS, processes, run-directory entries and D-state tasks " +
        "before and after); overhead (a compute-bound workload in clones, cow, ondemand and on another test host, vs " +
        "the VM with all memory present)",
    )
    .option("--clones <list>", "Clone counts N, comma-separated (default: fork, cluster 1,2,4,8,16,32; heuristics one N, 4)")
    .option(
      "--mem <size>",
      "Guest memory of the parent VM (default: fork 1G, cluster 64M, heuristics 128M, overhead 64M; --backend xen 256M)",
    )
    .option("--runs <n>", "Runs per measurement (the median is reported; default 3, overhead 5)")
    .option(
      "--memory <list>",
      "Fork memory paths, comma-separated: cow, ondemand (one the VMM refuses is reported unavailable; default: " +
        "fork, soak cow; overhead cow,ondemand); --backend xen: eager, ondemand (default both)",
    )
    .option("--kernel <path>", "fork: fork your own Linux instead of the built-in guest (a bzImage; QEMU boots the same)")
    .option("--initrd <path>", "fork, with --kernel: its initramfs")
    .option("--cmdline <text>", "fork, with --kernel: its command line (default: snowflock run's)")
    .option(
      "--ready <text>",
      "fork, with --kernel: the console text that shows the guest is up (default: its console has printed and gone quiet for 2 s)",
    )
    .option("--no-peer", "Skip the QEMU peer")
    .option(
      "--pool <n>",
      "fork: ready VMMs in the host's pool, full before each fork (default: the largest --clones; 0: none); cluster: " +
        "ready VMMs per host (the agents' pools), full before each run (default: a host's share of the largest N; 0: none)",
    )
    .option("--peer-max <n>", "Largest N the QEMU peer runs (a process per restored VM)", { default: 32 })
    .option(
      "--hosts <list>",
      "cluster: test host counts, comma-separated (one `cluster up` each; default 1,2,4,8; --backend xen: how many of " +
        "the inventory's dom0s, default 1,2); heuristics: one count (default 3; 0 skips the cross-host part); overhead: one " +
        "count (default 2; 0 skips the cross-host part)",
    )
    .option(
      "--transport <list>",
      "cluster: page transports, comma-separated: packet, udp (mcdist multicast), tcp (unicast only) " +
        "(default packet,tcp; --backend xen: tcp,packet); heuristics, overhead: one (default packet)",
    )
    .option("--workload <name>", "cluster: search-par (every clone reads the whole dataset) or sha256-par (each its own slice)", {
      default: "search-par",
    })
    .option("--workloads <list>", "heuristics: workloads, comma-separated: sha256-par, search-par, alloc-par", {
      default: "sha256-par,search-par,alloc-par",
    })
    .option("--size <size>", "cluster, heuristics: dataset size (default 16M); overhead: the data hashed each pass (default 1M)")
    .option("--passes <n>", "overhead: hashes of the dataset a round (default 16)")
    .option("--rounds <n>", "overhead: rounds each VM runs, the first its warm-up (default 8)")
    .option("--seed <n>", "cluster, heuristics: dataset seed", { default: 7 })
    .option("--mtu <bytes>", "cluster: MTU of the test hosts' links (as `cluster up --mtu`)", { default: TEST_HOST_MTU })
    .option("--cycles <n>", "soak: fork/kill cycles on this host (0 skips)", { default: 1000 })
    .option("--cross-cycles <n>", "soak: fork/kill cycles across test hosts (0 skips; --hosts sets how many, default 2)", { default: 200 })
    .option("--json", "Print the report as JSON")
    .option(
      "--domu-config <file>",
      "fork, cluster --backend xen: the xl config of the PVH domU to fork (default: the nested Xen host's test domU)",
    )
    .option("--inventory <file>", "cluster --backend xen: the inventory of the dom0s (default: $SNOWFLOCK_RUN_DIR/cluster.json)")
    .option("--out <dir>", "Where the report goes: BENCHMARK.json and BENCHMARK.svg (default: bench/results in the repo, else .)")
    .example((bin) => `  ${bin} bench fork --clones 1,4,16 --runs 5`)
    .example((bin) => `  ${bin} bench fork --kernel /boot/vmlinuz-$(uname -r) --initrd job.cpio --mem 256M --clones 1,2,4,8,16`)
    .example((bin) => `  ${bin} bench cluster --clones 1,4 --hosts 1,2 --runs 1`)
    .example((bin) => `  ${bin} bench heuristics --workloads alloc-par --size 4M --hosts 2`)
    .example((bin) => `  ${bin} bench soak --cycles 1000 --cross-cycles 200`)
    .example((bin) => `  ${bin} bench overhead --runs 5 --passes 32`)
    .example((bin) => `  ${bin} bench cluster --backend xen --inventory cluster.json --hosts 1,2 --clones 1,2,4,8   # in a dom0`)
    .action(async (benchmark: string, options: BenchOptions) => {
      if (!BENCHMARKS.includes(benchmark))
        throw new SnowflockError("USAGE", `unknown benchmark '${benchmark}'`, `the benchmarks are: ${BENCHMARKS.join(", ")}`);
      const backend = await selectBackend(options.backend, "bench");
      if (backend.domains) {
        if (benchmark === "cluster") return benchDomainCluster(backend.domains, options);
        if (benchmark !== "fork")
          throw new SnowflockError(
            "USAGE",
            `snowflock bench ${benchmark} does not run on ${backend.name}`,
            `on ${backend.name}: snowflock bench fork, snowflock bench cluster`,
          );
        return benchDomainFork(backend.domains, options);
      }
      backend.check();
      if (benchmark === "cluster") return benchCluster(options);
      if (benchmark === "heuristics") return benchHeuristics(options);
      if (benchmark === "soak") return benchSoak(options);
      if (benchmark === "overhead") return benchOverhead(options);
      const clones = [
        ...new Set(listOption(options.clones ?? DEFAULTS.fork.clones).map((n) => wholeNumber("--clones", n, MAX_CLONES_PER_FORK))),
      ].sort((a, b) => a - b);
      const memoryPaths = [...new Set(listOption(options.memory ?? DEFAULTS.fork.memory))];
      if (clones.length === 0 || memoryPaths.length === 0)
        throw new SnowflockError("USAGE", "--clones and --memory need at least one value");
      const bench = await import("../bench/fork.ts");
      const report = await bench.runForkBench({
        guest: benchGuest(options),
        clones,
        memoryBytes: memoryOption(options.mem ?? DEFAULTS.fork.mem),
        runs: wholeNumber("--runs", options.runs ?? DEFAULTS.fork.runs, 1000),
        memoryPaths,
        peer: options.peer !== false,
        peerMaxClones: wholeNumber("--peer-max", options.peerMax, MAX_CLONES_PER_FORK),
        pool: poolOption(options.pool) ?? Math.max(...clones),
      });
      publish(bench, report, options);
      return report.snowflock.some((p) => p.available) ? 0 : 1;
    });
}

/** The fork benchmark's guest: the built-in one, or a checked --kernel (and --initrd) with absolute paths. */
function benchGuest(options: BenchOptions): BenchGuest {
  if (options.kernel === undefined) {
    const stray = (["initrd", "cmdline", "ready"] as const).find((o) => options[o] !== undefined);
    if (stray) throw new SnowflockError("USAGE", `--${stray} goes with --kernel`);
    return { kind: "builtin" };
  }
  const files = { kernel: resolve(options.kernel), initrd: options.initrd === undefined ? undefined : resolve(options.initrd) };
  const guest: BenchGuest = { kind: "kernel", ...files, cmdline: options.cmdline, ready: options.ready };
  readKernelGuest({ ...files, cmdline: kernelCmdline(guest) });
  return guest;
}

async function benchDomainFork(domains: DomainOperations, options: BenchOptions): Promise<number> {
  const clones = [
    ...new Set(listOption(options.clones ?? DEFAULTS.xen.clones).map((n) => wholeNumber("--clones", n, domains.maxClones))),
  ].sort((a, b) => a - b);
  const domuConfig = String(options.domuConfig ?? DEFAULTS.xen.domuConfig());
  if (!existsSync(domuConfig))
    throw new SnowflockError("USAGE", `no xl config at ${domuConfig}`, "give the xl config of a PVH domU with --domu-config");
  // --memory's default names KVM's path (cow): on Xen it means both of Xen's.
  const memory =
    options.memory === undefined
      ? DEFAULTS.xen.memory
      : [...new Set(listOption(options.memory))].map((m) => {
          if (m !== "eager" && m !== "ondemand")
            throw new SnowflockError("USAGE", `bad --memory '${m}' for --backend xen`, "give eager, ondemand or both, comma-separated");
          return m;
        });
  const bench = await import("../bench/xen-fork.ts");
  const report = await bench.runXenForkBench(domains, {
    clones,
    runs: wholeNumber("--runs", options.runs ?? DEFAULTS.xen.runs, 1000),
    domuConfig,
    memoryBytes: memoryOption(options.mem ?? DEFAULTS.xen.mem),
    memory,
    progress: (line) => log.info(line),
  });
  return publish(bench, report, options);
}

/** `bench cluster --backend xen`: in a dom0 of a cluster of Xen hosts, the family over 1..H of them. */
async function benchDomainCluster(domains: DomainOperations, options: BenchOptions): Promise<number> {
  const sorted = (values: number[]) => [...new Set(values)].sort((a, b) => a - b);
  const clones = sorted(listOption(options.clones ?? DEFAULTS.xen.clones).map((n) => wholeNumber("--clones", n, domains.maxClones)));
  const hosts = sorted(listOption(options.hosts ?? DEFAULTS.xen.hosts).map((n) => wholeNumber("--hosts", n, 64)));
  const domuConfig = String(options.domuConfig ?? DEFAULTS.xen.domuConfig());
  if (!existsSync(domuConfig))
    throw new SnowflockError("USAGE", `no xl config at ${domuConfig}`, "give the xl config of a PVH domU with --domu-config");
  const transports = [...new Set(listOption(options.transport ?? DEFAULTS.xen.transport).map(transportOption))];
  const bench = await import("../bench/xen-cluster.ts");
  const report = await bench.runXenClusterBench(domains, {
    clones,
    hosts,
    transports,
    runs: wholeNumber("--runs", options.runs ?? DEFAULTS.xen.runs, 1000),
    domuConfig,
    memoryBytes: memoryOption(options.mem ?? DEFAULTS.xen.mem),
    cluster: clusterOfThisHost(options.inventory),
    progress: (line) => log.info(line),
  });
  return publish(bench, report, options);
}

async function benchCluster(options: BenchOptions): Promise<number> {
  const { MAX_TEST_HOSTS } = await import("../cluster/test-hosts.ts");
  const { checkMemory, parseWorkload } = await import("../guest/workloads.ts");
  const sorted = (values: number[]) => [...new Set(values)].sort((a, b) => a - b);
  const clones = sorted(listOption(options.clones ?? DEFAULTS.cluster.clones).map((n) => wholeNumber("--clones", n, MAX_CLONES_PER_FORK)));
  const hosts = sorted(listOption(options.hosts ?? DEFAULTS.cluster.hosts).map((n) => wholeNumber("--hosts", n, MAX_TEST_HOSTS)));
  const transports = [...new Set(listOption(options.transport ?? DEFAULTS.cluster.transport).map(transportOption))];
  if (clones.length === 0 || hosts.length === 0 || transports.length === 0)
    throw new SnowflockError("USAGE", "--clones, --hosts and --transport need at least one value");
  const bench = await import("../bench/cluster.ts");
  const workload = String(options.workload);
  if (!(bench.CLUSTER_WORKLOADS as string[]).includes(workload))
    throw new SnowflockError("USAGE", `bad --workload '${workload}'`, `use one of: ${bench.CLUSTER_WORKLOADS.join(", ")}`);
  const { sizeBytes, seed } = sizeAndSeed(options);
  const memoryBytes = memoryOption(options.mem ?? DEFAULTS.cluster.mem);
  // Fail before making any test host if the guest cannot hold the dataset.
  checkMemory(parseWorkload(workload, [`size=${sizeBytes}`, `seed=${seed}`, `clones=${clones[clones.length - 1]}`]), memoryBytes);
  const report = await bench.runClusterBench({
    clones,
    hosts,
    runs: wholeNumber("--runs", options.runs ?? DEFAULTS.cluster.runs, 1000),
    transports,
    workload: workload as (typeof bench.CLUSTER_WORKLOADS)[number],
    sizeBytes,
    memoryBytes,
    seed,
    mtu: wholeNumber("--mtu", options.mtu, 65535),
    pool: poolOption(options.pool),
  });
  return publish(bench, report, options, report.badRuns);
}

/** --pool: undefined for the benchmark's default, else 0 (none) up to the largest pool. */
function poolOption(value: unknown): number | undefined {
  if (value === undefined) return undefined;
  return Number(value) === 0 ? 0 : wholeNumber("--pool", value, MAX_POOL_SIZE);
}

async function benchSoak(options: BenchOptions): Promise<number> {
  const { MAX_TEST_HOSTS } = await import("../cluster/test-hosts.ts");
  const count = (option: string, value: unknown) => (String(value) === "0" ? 0 : wholeNumber(option, value, 1_000_000));
  const memory = listOption(options.memory ?? DEFAULTS.soak.memory);
  if (memory.length !== 1) throw new SnowflockError("USAGE", `bench soak takes one --memory value, not '${options.memory}'`);
  const bench = await import("../bench/soak.ts");
  const report = await bench.runSoakBench({
    cycles: count("--cycles", options.cycles),
    crossCycles: count("--cross-cycles", options.crossCycles),
    hosts: wholeNumber("--hosts", options.hosts ?? DEFAULTS.soak.hosts, MAX_TEST_HOSTS),
    clones: wholeNumber("--clones", options.clones ?? DEFAULTS.soak.clones, MAX_CLONES_PER_FORK),
    memory: memoryPathOption(memory[0]!),
    transport: transportOption(String(options.transport ?? DEFAULTS.soak.transport)),
    memoryBytes: memoryOption(options.mem ?? DEFAULTS.soak.mem),
  });
  return publish(bench, report, options, report.badRuns);
}

async function benchOverhead(options: BenchOptions): Promise<number> {
  const { MAX_TEST_HOSTS } = await import("../cluster/test-hosts.ts");
  const { checkMemory, parseWorkload } = await import("../guest/workloads.ts");
  const bench = await import("../bench/overhead.ts");
  const d = DEFAULTS.overhead;
  const { sizeBytes, seed } = sizeAndSeed(options, d.size);
  const passes = wholeNumber("--passes", options.passes ?? d.passes, 1_000_000);
  const rounds = wholeNumber("--rounds", options.rounds ?? d.rounds, 1000);
  if (rounds < 2) throw new SnowflockError("USAGE", "bench overhead needs --rounds 2 or more", "the first round is each VM's warm-up");
  const memoryBytes = memoryOption(options.mem ?? d.mem);
  checkMemory(parseWorkload("compute", [`size=${sizeBytes}`]), memoryBytes);
  const hosts = String(options.hosts ?? d.hosts) === "0" ? 0 : wholeNumber("--hosts", options.hosts ?? d.hosts, MAX_TEST_HOSTS);
  if (hosts === 1)
    throw new SnowflockError("USAGE", "bench overhead --hosts takes 0 (skip) or 2 or more", "a clone on another host needs two");
  const report = await bench.runOverheadBench({
    sizeBytes,
    passes,
    rounds,
    seed,
    runs: wholeNumber("--runs", options.runs ?? d.runs, 1000),
    memoryPaths: [...new Set(listOption(options.memory ?? d.memory))].map(memoryPathOption),
    memoryBytes,
    hosts,
    transport: transportOption(String(options.transport ?? d.transport)),
  });
  return publish(bench, report, options, report.badRuns);
}

/** What every benchmark does with its report: write JSON and SVG, print it; 1 if some run failed or answered wrongly. */
function publish<R>(
  bench: { writeReport(report: R, dir: string): { json: string; svg: string }; formatReport(report: R): string; defaultOutDir(): string },
  report: R,
  options: BenchOptions,
  badRuns = 0,
): number {
  const paths = bench.writeReport(report, options.out === undefined ? bench.defaultOutDir() : String(options.out));
  if (options.json) printJson(report);
  else printLine(bench.formatReport(report));
  log.success(`wrote ${paths.json} and ${paths.svg}`);
  if (badRuns > 0) {
    log.error(`${badRuns} run(s) failed or printed a wrong answer; see the report`);
    return 1;
  }
  return 0;
}

/** The dataset size and seed options (cluster, heuristics). */
function sizeAndSeed(options: BenchOptions, defaultSize = DEFAULTS.dataset.size): { sizeBytes: number; seed: number } {
  const sizeBytes = parseSize(String(options.size ?? defaultSize));
  if (sizeBytes === undefined || sizeBytes < 2)
    throw new SnowflockError("USAGE", `bad --size '${options.size}'`, "give a size such as 16M");
  const seed = Number(options.seed);
  if (!Number.isSafeInteger(seed) || seed < 0) throw new SnowflockError("USAGE", `bad --seed '${options.seed}'`, "give a whole number");
  return { sizeBytes, seed };
}

async function benchHeuristics(options: BenchOptions): Promise<number> {
  const { MAX_TEST_HOSTS } = await import("../cluster/test-hosts.ts");
  const { checkMemory, parseWorkload } = await import("../guest/workloads.ts");
  const bench = await import("../bench/heuristics.ts");
  const workloads = [...new Set(listOption(options.workloads))];
  if (workloads.length === 0) throw new SnowflockError("USAGE", "--workloads needs at least one value");
  const unknown = workloads.find((w) => !(bench.HEURISTICS_WORKLOADS as string[]).includes(w));
  if (unknown !== undefined)
    throw new SnowflockError("USAGE", `bad --workloads entry '${unknown}'`, `use some of: ${bench.HEURISTICS_WORKLOADS.join(", ")}`);
  const one = (option: string, value: unknown) => {
    const values = listOption(value);
    if (values.length !== 1) throw new SnowflockError("USAGE", `bench heuristics takes one ${option} value, not '${value}'`);
    return values[0]!;
  };
  const clones = wholeNumber("--clones", one("--clones", options.clones ?? DEFAULTS.heuristics.clones), MAX_CLONES_PER_FORK);
  const hostsText = one("--hosts", options.hosts ?? DEFAULTS.heuristics.hosts);
  const hosts = hostsText === "0" ? 0 : wholeNumber("--hosts", hostsText, MAX_TEST_HOSTS);
  const transport = transportOption(one("--transport", options.transport ?? DEFAULTS.heuristics.transport));
  const { sizeBytes, seed } = sizeAndSeed(options);
  const memoryBytes = memoryOption(options.mem ?? DEFAULTS.heuristics.mem);
  // Fail before running anything if the guest cannot hold a workload's data.
  for (const w of workloads) checkMemory(parseWorkload(w, [`size=${sizeBytes}`, `seed=${seed}`, `clones=${clones}`]), memoryBytes);
  const report = await bench.runHeuristicsBench({
    workloads: workloads as (typeof bench.HEURISTICS_WORKLOADS)[number][],
    sizeBytes,
    clones,
    memoryBytes,
    runs: wholeNumber("--runs", options.runs ?? DEFAULTS.heuristics.runs, 1000),
    hosts,
    transport,
    seed,
  });
  return publish(bench, report, options, report.badRuns);
}
