/**
 * `snowflock bench cluster --backend xen`, in a dom0 of a cluster of Xen hosts (every dom0 runs
 * `snowflock agent --backend xen --host H`): N clones of a PVH domU spread over the first H hosts
 * of the inventory (this one first) with `fork --cluster`'s pipeline (src/cluster/domain-spread.ts),
 * for each H, transport (H > 1: tcp, or mcdist's packet/udp) and N: time to all N running, the
 * parent's stop, and what the fork's server sent to the other hosts (bytes, pages, hosts served).
 * In the same run, two baselines: one clone on the parent's own host (time), and one clone on
 * another host over each transport (server bytes). Ratios against those are what the goals speak
 * of; under emulation only they mean anything.
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import type { DomainOperations } from "../backend/backend.ts";
import { forkDomain } from "../clone/domain-fork.ts";
import type { ForkResult, RemoteTransport } from "../clone/fork-result.ts";
import { agentRequest } from "../cluster/agent-client.ts";
import { ClusterContext } from "../cluster/cluster-context.ts";
import { forkDomainAcross } from "../cluster/domain-spread.ts";
import { END_CLONES_TIMEOUT_MS, type FamilyEvent } from "../cluster/family-event.ts";
import { SnowflockError } from "../errors.ts";
import { runDir } from "../run-dir.ts";
import { formatSize } from "../size.ts";
import { defaultOutDir } from "./fork.ts";
import { fixed, table } from "./format.ts";
import { machineNote, median } from "./machine.ts";
import { writeReportFiles } from "./report-files.ts";
import { linePlot } from "./svg.ts";
import { configNamed, destroy, startParent } from "./xen-domu.ts";

export { defaultOutDir };

export interface XenClusterBenchOptions {
  clones: number[];
  /** How many of the inventory's hosts each family may spread over (this host always among them). */
  hosts: number[];
  /** How the other hosts fetch the image, for rows with H > 1. */
  transports: RemoteTransport[];
  runs: number;
  domuConfig: string;
  memoryBytes: number;
  cluster: ClusterContext;
  progress: (line: string) => void;
}

export interface XenClusterRow {
  hosts: number;
  /** How the other hosts fetched the image (rows with H > 1). */
  transport?: RemoteTransport;
  clones: number;
  /** From the request to the last clone running (the other hosts' answers included). */
  totalMs: number;
  parentDownMs: number;
  /** Clones placed on other hosts (the median run's placement is the same in every run). */
  remoteClones: number;
  /** What the fork's memory server sent, and to how many hosts. */
  serverBytes: number;
  serverPages: number;
  hostsServed: number;
  /** totalMs / one clone on the parent's host. */
  timeRatio: number;
  /** serverBytes / one clone on another host over the same transport (undefined when nothing went to another host). */
  bytesRatio?: number;
}

export interface XenClusterReport {
  benchmark: "snowflock fork --cluster --backend xen (eager memory)";
  machine: string;
  xen: string;
  memoryBytes: number;
  runs: number;
  hostNames: string[];
  /** One clone on the parent's own host: time to running. */
  oneHereMs: number;
  /** One clone on another host: what the server sent, by transport. */
  oneRemoteBytes: Partial<Record<RemoteTransport, number>>;
  rows: XenClusterRow[];
  goals: Array<{ goal: string; value: string; met: boolean }>;
}

const PARENT = "sfclusterbench";
const seconds = (ms: number) => fixed(ms / 1000, 2);
const megabytes = (bytes: number) => `${fixed(bytes / 1e6, 1)} MB`;

/** The cluster cut down to this host and the next `count - 1` of the inventory. */
function firstHosts(cluster: ClusterContext, count: number): ClusterContext {
  const others = cluster.inventory.hosts.filter((h) => h.name !== cluster.host.name).slice(0, count - 1);
  const inventory = { ...cluster.inventory, hosts: [cluster.host, ...others] };
  return new ClusterContext(cluster.inventoryPath, inventory, cluster.host, new Map());
}

/** Ends a fork's clones: here by name, elsewhere through each host's agent. */
async function endClones(cluster: ClusterContext, parentDomain: number, fork: ForkResult): Promise<void> {
  for (const clone of fork.clones.filter((c) => c.host === undefined || c.host === cluster.host.name)) await destroy(clone.name);
  const event: FamilyEvent = { event: "end-family", parentHost: cluster.host.name, parentDomain };
  const elsewhere = new Set(fork.clones.flatMap((c) => (c.host && c.host !== cluster.host.name ? [c.host] : [])));
  for (const host of elsewhere) await cluster.agentCall(cluster.hostNamed(host), "family", event, END_CLONES_TIMEOUT_MS);
}

/** Every host's agent must answer before a run: a silent one would simply get no clones. */
async function checkAgents(cluster: ClusterContext, count: number): Promise<void> {
  for (const host of firstHosts(cluster, count).inventory.hosts) {
    try {
      await agentRequest(cluster.agentOf(host), cluster.inventory.secret, "hello");
    } catch (error) {
      throw new SnowflockError(
        "CONTROL",
        `the agent of ${host.name} does not answer: ${(error as Error).message}`,
        `run \`snowflock agent --backend xen --host ${host.name} --inventory ${cluster.inventoryPath}\` in that dom0`,
      );
    }
  }
}

export async function runXenClusterBench(domains: DomainOperations, options: XenClusterBenchOptions): Promise<XenClusterReport> {
  const { cluster } = options;
  const say = options.progress;
  const most = Math.max(...options.hosts);
  if (most > cluster.inventory.hosts.length)
    throw new SnowflockError("USAGE", `--hosts ${most}: the inventory has ${cluster.inventory.hosts.length} host(s)`);
  await checkAgents(cluster, Math.max(most, Math.min(2, cluster.inventory.hosts.length)));
  const dir = join("/var/tmp", "snowflock-bench-xen");
  mkdirSync(dir, { recursive: true });
  try {
    say("starting the parent domU");
    const memoryBytes = await startParent(domains, PARENT, configNamed(options.domuConfig, PARENT, dir, options.memoryBytes), say);
    const parentDomain = (await domains.list()).find((d) => d.name === PARENT)!.id;
    const spreadFork = async (hosts: number, n: number, transport?: RemoteTransport) => {
      const scope = firstHosts(cluster, hosts);
      const fork = await forkDomainAcross(domains, scope, PARENT, n, { workDirectory: runDir(), transport });
      await endClones(scope, parentDomain, fork);
      if (fork.failed.length > 0)
        throw new SnowflockError("VM_STATE", `${fork.failed.length} clone(s) failed: ${fork.failed.map((f) => f.error).join("; ")}`);
      return fork;
    };

    const spreads = options.hosts.some((h) => h > 1);
    const here: number[] = [];
    const remote = new Map<RemoteTransport, number[]>(options.transports.map((t) => [t, []]));
    for (let run = 1; run <= options.runs; run++) {
      say(`baseline run ${run}/${options.runs}: one clone on ${cluster.host.name}`);
      const fork = await forkDomain(domains, PARENT, 1, { workDirectory: runDir() });
      for (const clone of fork.clones) await destroy(clone.name);
      here.push(fork.totalMs);
      if (!spreads) continue;
      for (const [transport, bytes] of remote) {
        say(`baseline run ${run}/${options.runs}: one clone on another host (${transport})`);
        bytes.push((await spreadFork(2, 1, transport)).memoryServer?.bytesSent ?? 0);
      }
    }
    const oneHereMs = median(here);
    const oneRemoteBytes: XenClusterReport["oneRemoteBytes"] = {};
    for (const [transport, bytes] of remote) if (bytes.length > 0) oneRemoteBytes[transport] = median(bytes);

    const rows: XenClusterRow[] = [];
    for (const hosts of options.hosts) {
      for (const transport of hosts > 1 ? options.transports : [undefined]) {
        for (const n of options.clones) {
          const label = `${hosts} host(s)${transport ? ` over ${transport}` : ""}, N=${n}`;
          const forks: ForkResult[] = [];
          for (let run = 1; run <= options.runs; run++) {
            say(`${label}, run ${run}/${options.runs}`);
            forks.push(await spreadFork(hosts, n, transport));
          }
          const row = summarize(forks, { hosts, transport, n, here: cluster.host.name, oneHereMs, oneRemoteBytes });
          rows.push(row);
          say(
            `${label}: ${seconds(row.totalMs)} s to all running (${fixed(row.timeRatio, 2)}x one clone here), ` +
              `server ${megabytes(row.serverBytes)}${row.bytesRatio !== undefined ? ` (${fixed(row.bytesRatio, 2)}x one clone elsewhere)` : ""}`,
          );
        }
      }
    }
    return {
      benchmark: "snowflock fork --cluster --backend xen (eager memory)",
      machine: machineNote(),
      xen: await domains.hypervisor(),
      memoryBytes,
      runs: options.runs,
      hostNames: firstHosts(cluster, most).inventory.hosts.map((h) => h.name),
      oneHereMs,
      oneRemoteBytes,
      rows,
      goals: goals(rows, oneHereMs),
    };
  } finally {
    await destroy(PARENT);
  }
}

/** One row: the medians of its runs, and their ratios to the baselines. */
function summarize(
  forks: ForkResult[],
  at: {
    hosts: number;
    transport?: RemoteTransport;
    n: number;
    here: string;
    oneHereMs: number;
    oneRemoteBytes: XenClusterReport["oneRemoteBytes"];
  },
): XenClusterRow {
  const m = (pick: (f: ForkResult) => number) => median(forks.map(pick));
  const serverBytes = m((f) => f.memoryServer?.bytesSent ?? 0);
  const oneRemote = at.transport && at.oneRemoteBytes[at.transport];
  return {
    hosts: at.hosts,
    ...(at.transport && { transport: at.transport }),
    clones: at.n,
    totalMs: m((f) => f.totalMs),
    parentDownMs: m((f) => f.pausedMs),
    remoteClones: forks[0]!.clones.filter((c) => c.host !== at.here).length,
    serverBytes,
    serverPages: m((f) => f.memoryServer?.pagesServed ?? 0),
    hostsServed: m((f) => f.memoryServer?.clients ?? 0),
    timeRatio: m((f) => f.totalMs) / at.oneHereMs,
    bytesRatio: oneRemote && serverBytes > 0 ? serverBytes / oneRemote : undefined,
  };
}

/** The issue's goals, for the widest spread measured: bytes for N clones ≤ 1.2x one clone's; N = 8 over 2 hosts ≤ 2x one clone here. */
function goals(rows: XenClusterRow[], oneHereMs: number): XenClusterReport["goals"] {
  const out: XenClusterReport["goals"] = [];
  const spread = rows.filter((r) => r.bytesRatio !== undefined);
  if (spread.length > 0) {
    const worst = spread.reduce((a, b) => (b.bytesRatio! > a.bytesRatio! ? b : a));
    out.push({
      goal: "server bytes for N clones <= 1.2x one clone's",
      value: `worst ${fixed(worst.bytesRatio!, 2)}x (N=${worst.clones}, ${worst.hosts} hosts)`,
      met: worst.bytesRatio! <= 1.2,
    });
  }
  for (const eight of rows.filter((r) => r.hosts === 2 && r.clones === 8))
    out.push({
      goal: `N=8 over 2 hosts (${eight.transport}) running <= 2x one clone on the parent's host`,
      value: `${seconds(eight.totalMs)} s vs ${seconds(oneHereMs)} s (${fixed(eight.totalMs / oneHereMs, 2)}x)`,
      met: eight.totalMs <= 2 * oneHereMs,
    });
  return out;
}

export function formatReport(report: XenClusterReport): string {
  const lines = [
    report.benchmark,
    `${report.machine}; ${report.xen}; PVH domU of ${formatSize(report.memoryBytes)}; hosts ${report.hostNames.join(", ")}; ` +
      `median of ${report.runs} run(s)`,
    `baselines: one clone on the parent's host ${seconds(report.oneHereMs)} s; one clone on another host: server ` +
      (Object.entries(report.oneRemoteBytes)
        .map(([t, bytes]) => `${megabytes(bytes)} (${t})`)
        .join(", ") || "-"),
    "",
    ...table(
      [
        "hosts",
        "transport",
        "N",
        "elsewhere",
        "running s",
        "vs 1 here",
        "parent down s",
        "server bytes",
        "pages",
        "hosts served",
        "vs 1 elsewhere",
      ],
      report.rows.map((r) => [
        String(r.hosts),
        r.transport ?? "-",
        String(r.clones),
        String(r.remoteClones),
        seconds(r.totalMs),
        `${fixed(r.timeRatio, 2)}x`,
        seconds(r.parentDownMs),
        megabytes(r.serverBytes),
        String(r.serverPages),
        String(r.hostsServed),
        r.bytesRatio === undefined ? "-" : `${fixed(r.bytesRatio, 2)}x`,
      ]),
    ),
  ];
  if (report.goals.length > 0)
    lines.push("", "goals:", ...report.goals.map((g) => `  ${g.met ? "met" : "NOT met"}: ${g.goal}: ${g.value}`));
  return `${lines.join("\n")}\n`;
}

export function plotReport(report: XenClusterReport): string {
  return linePlot({
    title: `Xen over ${report.hostNames.length} host(s): time to N running clones of a ${formatSize(report.memoryBytes)} PVH domU (median of ${report.runs})`,
    subtitle: `${report.machine}; ${report.xen}`,
    xLabel: "clones N (log2 scale)",
    yLabel: "seconds to all N running",
    xLog2: true,
    series: [
      ...[...new Set(report.rows.map((r) => `${r.hosts} ${r.transport ?? ""}`))].map((key) => {
        const rows = report.rows.filter((r) => `${r.hosts} ${r.transport ?? ""}` === key);
        const { hosts, transport } = rows[0]!;
        return {
          name: hosts === 1 ? "on 1 host" : `over ${hosts} hosts (${transport})`,
          points: rows.map((r): [number, number] => [r.clones, r.totalMs / 1000]),
        };
      }),
      {
        name: "one clone on the parent's host",
        points: report.rows.map((r): [number, number] => [r.clones, report.oneHereMs / 1000]),
        dashed: true,
      },
    ],
  });
}

/** Writes xen-cluster.json and xen-cluster.svg into `dir`; returns their paths. */
export function writeReport(report: XenClusterReport, dir: string): { json: string; svg: string } {
  return writeReportFiles(dir, "xen-cluster", report, plotReport(report));
}
