/**
 * What the benchmarks that drive the CLI share: a private run directory and test-host prefix per
 * session, running `snowflock` (this executable, or bin/snowflock.ts from source), test hosts up
 * and down, waiting for a run's VMs to end, progress lines, and cleanup on error or a signal.
 */
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { SnowflockError } from "../errors.ts";
import { listNamespaces } from "../cluster/netns.ts";
import { readInventory } from "../cluster/inventory.ts";
import { hostRunDir } from "../cluster/test-agents.ts";
import { listVms, processAlive, signalProcess } from "../run-dir.ts";
import { scaledTimeout } from "../timeouts.ts";
import { selfCommand } from "../vmm/self.ts";
import { controlRequest } from "../vmm/control-client.ts";
import type { VmResult } from "../vmm/vmm.ts";

export const RUN_TIMEOUT_MS = 300_000;
export const CLI_TIMEOUT_MS = 120_000;

/** stderr progress: one rewritten line on a terminal, plain lines otherwise. */
export function progress(text: string): void {
  if (process.stderr.isTTY) process.stderr.write(`\r\x1b[K${text}`);
  else process.stderr.write(`${text}\n`);
}
export function progressDone(): void {
  if (process.stderr.isTTY) process.stderr.write("\r\x1b[K");
}
export function warn(text: string): void {
  progressDone();
  process.stderr.write(`${text}\n`);
}

/** The snowflock CLI: this executable when compiled, else bin/snowflock.ts from source. */
export function cliCommand(): string[] {
  const compiled = selfCommand().length === 1;
  return compiled ? selfCommand() : [process.execPath, join(import.meta.dir, "../../bin/snowflock.ts")];
}

export interface Session {
  tmp: string;
  runDir: string;
  inventory: string;
  prefix: string;
  clusterUp: boolean;
  /** Runs so far (for each run's VM name). */
  runs: number;
  /** The snowflock command line to run (default: cliCommand()). */
  command?: string[];
  child?: Subprocess;
}

export async function cli(
  session: Session,
  args: string[],
  timeoutMs: number,
): Promise<{ status: number; stdout: string; stderr: string; wallMs: number }> {
  const started = performance.now();
  const child = Bun.spawn([...(session.command ?? cliCommand()), ...args], {
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, SNOWFLOCK_RUN_DIR: session.runDir, SNOWFLOCK_QUIET: "1", NO_COLOR: "1" },
    timeout: timeoutMs,
    killSignal: "SIGKILL",
  });
  session.child = child;
  try {
    const [stdout, stderr, status] = await Promise.all([
      new Response(child.stdout).text(),
      new Response(child.stderr).text(),
      child.exited,
    ]);
    return { status, stdout, stderr, wallMs: performance.now() - started };
  } finally {
    session.child = undefined;
  }
}

export const lastLine = (text: string) =>
  text
    .replace(/\x1b\[[0-9;]*m/g, "")
    .trim()
    .split("\n")
    .pop() ?? "";

/**
 * `cluster up` with this session's prefix and inventory; without `mtu`, the test hosts' default;
 * with `pool`, each host's agent keeps that many ready VMMs.
 */
export async function clusterUp(session: Session, hosts: number, maxClones: number, mtu?: number, pool = 0): Promise<void> {
  session.clusterUp = true; // from now on, a cleanup runs `cluster down` (also for a half-made cluster)
  const mtuArgs = mtu === undefined ? [] : ["--mtu", String(mtu)];
  const poolArgs = pool > 0 ? ["--pool", String(pool)] : [];
  const r = await cli(
    session,
    [
      "cluster",
      "up",
      "--hosts",
      String(hosts),
      ...mtuArgs,
      ...poolArgs,
      "--prefix",
      session.prefix,
      "--inventory",
      session.inventory,
      "--max-clones",
      String(maxClones),
      "--json",
    ],
    CLI_TIMEOUT_MS,
  );
  if (r.status !== 0) throw new SnowflockError("VM_STATE", `cluster up --hosts ${hosts} failed: ${lastLine(r.stderr)}`);
}

/** The run directories of the session's test hosts (each agent's, where its pool lives). */
export function hostRunDirs(session: Session): string[] {
  const inventory = readInventory(session.inventory);
  return inventory.hosts.map((host) => hostRunDir(inventory.cluster, host.name, session.runDir));
}

export async function clusterDown(session: Session): Promise<void> {
  if (!session.clusterUp) return;
  const r = await cli(session, ["cluster", "down", "--inventory", session.inventory, "--prefix", session.prefix, "--json"], CLI_TIMEOUT_MS);
  if (r.status !== 0) warn(`cluster down failed: ${lastLine(r.stderr)}`);
  session.clusterUp = false;
}

/** The same, synchronously: for a signal handler. */
function clusterDownSync(session: Session): void {
  if (!session.clusterUp) return;
  Bun.spawnSync([...(session.command ?? cliCommand()), "cluster", "down", "--inventory", session.inventory, "--prefix", session.prefix], {
    stdin: "ignore",
    stdout: "ignore",
    stderr: "inherit",
    env: { ...process.env, SNOWFLOCK_RUN_DIR: session.runDir, SNOWFLOCK_QUIET: "1" },
    timeout: CLI_TIMEOUT_MS,
  });
  session.clusterUp = false;
}

/** Ends VMs by their control sockets; those whose processes outlive `timeoutMs` are killed. */
export async function stopVms(vms: Array<{ name: string; pid?: number }>, timeoutMs = scaledTimeout(10_000)): Promise<void> {
  await Promise.all(vms.map((vm) => controlRequest(vm.name, "kill").catch(() => undefined)));
  const pids = vms.flatMap((vm) => (vm.pid === undefined ? [] : [vm.pid]));
  const deadline = Date.now() + timeoutMs;
  while (pids.some(processAlive)) {
    if (Date.now() > deadline) {
      for (const pid of pids.filter(processAlive)) signalProcess(pid, "SIGKILL");
      await Bun.sleep(50);
      return;
    }
    await Bun.sleep(5);
  }
}

const SETTLE_TIMEOUT_MS = 15_000;

/** The VMs (parents and clones, on every test host) running in the session's run directory. */
export function sessionVms(session: Session): Array<{ name: string; pid: number }> {
  const saved = process.env.SNOWFLOCK_RUN_DIR;
  process.env.SNOWFLOCK_RUN_DIR = session.runDir;
  try {
    return listVms();
  } catch {
    return [];
  } finally {
    if (saved === undefined) delete process.env.SNOWFLOCK_RUN_DIR;
    else process.env.SNOWFLOCK_RUN_DIR = saved;
  }
}

/** Waits until no VM of the session runs any more (so the next run starts on a quiet machine); returns how long that took. */
export async function settle(session: Session): Promise<number> {
  const started = performance.now();
  for (;;) {
    const left = sessionVms(session);
    if (left.length === 0) return performance.now() - started;
    if (performance.now() - started > SETTLE_TIMEOUT_MS) {
      warn(
        `still running ${Math.round(SETTLE_TIMEOUT_MS / 1000)} s after the run ended: ` +
          `${left.map((vm) => `${vm.name} (pid ${vm.pid})`).join(", ")}; going on`,
      );
      return performance.now() - started;
    }
    await Bun.sleep(20);
  }
}

export function cleanup(session: Session): void {
  const child = session.child;
  if (child && child.exitCode === null && child.signalCode === null) {
    child.kill("SIGTERM");
    const deadline = Date.now() + 5000;
    while (processAlive(child.pid) && Date.now() < deadline) Bun.sleepSync(50);
    if (processAlive(child.pid)) child.kill("SIGKILL");
  }
  clusterDownSync(session);
  for (const vm of sessionVms(session)) {
    try {
      process.kill(vm.pid, "SIGKILL");
    } catch {}
  }
  rmSync(session.tmp, { recursive: true, force: true });
}

/**
 * A new session (its own temp directory and test-host prefix); a signal cleans it up and ends the
 * process. `close()` cleans it up at the end.
 */
export function openSession(kind: string, prefix: string): Session & { close(): void } {
  const tmp = mkdtempSync(join(tmpdir(), `snowflock-bench-${kind}-`));
  const session: Session = {
    tmp,
    runDir: join(tmp, "run"),
    inventory: join(tmp, "run", "cluster.json"),
    prefix,
    clusterUp: false,
    runs: 0,
  };
  mkdirSync(session.runDir, { mode: 0o700 });
  const interrupted = () => {
    warn("interrupted; stopping the benchmark's VMs and removing its test hosts");
    cleanup(session);
    process.exit(130);
  };
  process.on("SIGINT", interrupted);
  process.on("SIGTERM", interrupted);
  return Object.assign(session, {
    close() {
      process.off("SIGINT", interrupted);
      process.off("SIGTERM", interrupted);
      cleanup(session);
    },
  });
}

/** A test-host prefix of this process's own (`sf<letter><pid % 1000>`), refused if test hosts with it exist already. */
export async function ownPrefix(letter: string): Promise<string> {
  const prefix = `sf${letter}${process.pid % 1000}`;
  if ((await listNamespaces()).some((n) => n.startsWith(`${prefix}-`))) {
    throw new SnowflockError(
      "USAGE",
      `test hosts with prefix '${prefix}' already exist`,
      `remove them with \`snowflock cluster down --prefix ${prefix}\` or run again`,
    );
  }
  return prefix;
}

/** m:ss since `started` (performance.now()), for progress lines. */
export function stopwatch(started = performance.now()): () => string {
  return () => {
    const s = Math.round((performance.now() - started) / 1000);
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  };
}

/** Runs that failed or printed a wrong answer: counted, and each one warned of as it happens. */
export class FailedRuns {
  count = 0;
  record(what: string, sample: { ok: boolean; error?: string }): void {
    if (sample.ok) return;
    this.count++;
    warn(`MISMATCH/FAILURE ${what}: ${sample.error}`);
  }
}

/** A `snowflock run ... --json` of a parallel workload, read and checked against the host's answer. */
export type CheckedRun =
  | { error: string }
  | {
      result: VmResult;
      /** Clones per host ("local" without a cluster), and how many ran on a host other than h1. */
      placement: Record<string, number>;
      remoteClones: number;
      /** What differs from a clean run of `clones` clones printing `expected`; empty when none. */
      problems: string[];
    };

export function checkRun(r: { status: number; stdout: string; stderr: string }, clones: number, expected: string[]): CheckedRun {
  let result: VmResult;
  try {
    result = JSON.parse(r.stdout) as VmResult;
  } catch {
    return { error: `exit ${r.status}, no JSON result: ${lastLine(r.stderr) || lastLine(r.stdout) || "(no output)"}` };
  }
  const fork = result.forks?.[0];
  const placement: Record<string, number> = {};
  for (const c of fork?.clones ?? []) placement[c.host ?? "local"] = (placement[c.host ?? "local"] ?? 0) + 1;
  const remoteClones = (fork?.clones ?? []).filter((c) => c.host !== undefined && c.host !== "h1").length;
  const problems: string[] = [];
  if (r.status !== 0 || result.exitStatus !== 0)
    problems.push(`exit ${r.status} (guest ${result.end.kind}${"status" in result.end ? ` ${result.end.status}` : ""})`);
  if (!fork) problems.push("no fork recorded");
  else if (fork.failed.length > 0)
    problems.push(`${fork.failed.length} clone(s) failed: ${fork.failed[0]!.name}: ${fork.failed[0]!.error}`);
  else if (fork.clones.length !== clones) problems.push(`${fork.clones.length} clones ran, ${clones} asked for`);
  const console = result.console ?? [];
  if (console.length !== expected.length || console.some((line, i) => line !== expected[i])) {
    let i = expected.findIndex((line, k) => console[k] !== line);
    if (i < 0) i = expected.length; // the console has more lines than expected
    problems.push(
      `console differs from the host's answer at line ${i + 1}: got '${console[i] ?? "(none)"}', expected '${expected[i] ?? "(none)"}'`,
    );
  }
  return { result, placement, remoteClones, problems };
}
