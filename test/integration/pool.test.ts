/**
 * Issue 16: the host's pool of ready VMMs, without KVM. Real pool daemons, real ready processes
 * (Bun with the program loaded, a vCPU thread started), real sockets; forks that need /dev/kvm
 * are in pool-fork.test.ts.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { cpuByProcess } from "../../src/bench/process-cpu.ts";
import { processMemoryBytes } from "../../src/pool/idle-memory.ts";
import { KEPT_ENDED_LOGS, pruneEndedLogs } from "../../src/run-dir.ts";
import { launchClone } from "../../src/vmm/spawn.ts";
import { snowflock, testRunDir } from "../support/cli.ts";
import { poolProcesses } from "../support/pool.ts";
import { waitUntil } from "../support/wait.ts";
import { within } from "../support/time.ts";

const dirs: string[] = [];
afterAll(async () => {
  for (const dir of dirs) await snowflock(["pool", "--clones", "0"], { SNOWFLOCK_RUN_DIR: dir });
});

function poolDir(): { dir: string; env: Record<string, string> } {
  const dir = testRunDir();
  dirs.push(dir);
  return { dir, env: { SNOWFLOCK_RUN_DIR: dir } };
}

async function poolState(env: Record<string, string>, args: string[] = []) {
  const answer = await snowflock(["pool", ...args, "--json"], env);
  expect(answer.stderr).toBe("");
  expect(answer.status).toBe(0);
  return JSON.parse(answer.stdout).pool;
}

const readyPids = (dir: string) =>
  poolProcesses(dir)
    .filter((p) => p.role === "__ready")
    .map((p) => p.pid);

describe("a host's pool of ready VMMs", () => {
  test("fills to its size, shows itself, and replaces a pooled process that dies", async () => {
    const { dir, env } = poolDir();
    expect(await poolState(env)).toBeNull();
    const filled = await poolState(env, ["--clones", "3"]);
    expect(filled).toMatchObject({ size: 3, ready: 3, starting: 0, served: 0, died: 0 });
    expect(filled.pids.sort()).toEqual(readyPids(dir).sort());
    for (const pid of filled.pids) expect(existsSync(`${dir}/@ready-${pid}.sock`)).toBe(true);
    expect(filled.idleBytes).toBeGreaterThan(0);

    const text = await snowflock(["pool"], env);
    expect(text.stderr).toMatch(/3 of 3 ready VMM\(s\), [\d.]+[KMG] idle of 1G allowed; 0 served, 0 died/);
    const doctor = JSON.parse((await snowflock(["doctor", "--backend", "kvm", "--json"], env)).stdout);
    expect(doctor.pool).toMatchObject({ size: 3, ready: 3 });

    const victim = filled.pids[1];
    process.kill(victim, "SIGKILL");
    await waitUntil(
      async () => {
        const state = await poolState(env);
        return state.ready === 3 && state.died === 1 && !state.pids.includes(victim);
      },
      within(20_000),
      "the dead ready process is replaced",
    );
    expect(existsSync(`${dir}/@ready-${victim}.sock`)).toBe(false);
    expect(readyPids(dir).length).toBe(3);
  });

  test("never holds more idle memory than --max-idle-memory allows", async () => {
    const { dir, env } = poolDir();
    const one = await poolState(env, ["--clones", "1"]);
    expect(one.ready).toBe(1);
    const each = processMemoryBytes(one.pids[0])!;
    // Room for one and a half: the pool keeps one (or, with its pages shared, what fits), never four.
    const limit = Math.floor(each * 1.5);
    const bounded = await poolState(env, ["--clones", "4", "--max-idle-memory", `${Math.floor(limit / 1024)}K`]);
    expect(bounded.ready).toBeGreaterThanOrEqual(1);
    expect(bounded.ready).toBeLessThan(4);
    expect(bounded.idleBytes).toBeLessThanOrEqual(bounded.maxIdleBytes);
    // Measured here, not taken from the keeper.
    const held = readyPids(dir).reduce((sum, pid) => sum + (processMemoryBytes(pid) ?? 0), 0);
    expect(held).toBeLessThanOrEqual(bounded.maxIdleBytes);
    expect(readyPids(dir).length).toBe(bounded.ready);

    // A bound below a single process: the pool holds none and says why.
    const none = await poolState(env, ["--clones", "4", "--max-idle-memory", "1M"]);
    expect(none.ready).toBe(0);
    expect(none.lastError).toContain("more than the 1M allowed");
    await waitUntil(() => readyPids(dir).length === 0, within(10_000), "the pool is empty");
  });

  test("ending the pool, or its keeper dying, leaves no pooled process behind", async () => {
    const { dir, env } = poolDir();
    expect((await poolState(env, ["--clones", "2"])).ready).toBe(2);
    const ended = await snowflock(["pool", "--clones", "0"], env);
    expect(ended.status).toBe(0);
    await waitUntil(() => poolProcesses(dir).length === 0, within(10_000), "no pool process is left");
    expect(readdirSync(dir).filter((f) => f.startsWith("@") && f.endsWith(".sock"))).toEqual([]);

    expect((await poolState(env, ["--clones", "2"])).ready).toBe(2);
    const keeper = poolProcesses(dir).find((p) => p.role === "__pool")!;
    process.kill(keeper.pid, "SIGKILL");
    await waitUntil(() => poolProcesses(dir).length === 0, within(10_000), "the ready processes end with their keeper");
    expect(await poolState(env)).toBeNull();
  });

  test(
    "a ready VMM is idle while it waits: under 0.5 ms of CPU a second over all its threads",
    async () => {
      const { env } = poolDir();
      const { pids } = await poolState(env, ["--clones", "2"]);
      expect(pids.length).toBe(2);
      await Bun.sleep(2000); // what its warm-up left to the JIT threads
      const before = cpuByProcess(pids);
      const windowMs = 4000;
      await Bun.sleep(windowMs);
      const after = cpuByProcess(pids);
      for (const pid of pids) {
        const msPerSecond = (after.get(pid)! - before.get(pid)!) / 1e6 / (windowMs / 1000);
        console.log(`ready VMM ${pid}: ${msPerSecond.toFixed(3)} ms/s`);
        // With Bun's GC timer (a collection a second on each of its three JS threads) it was ~1.8.
        expect(msPerSecond, `ready VMM ${pid}`).toBeLessThan(within(0.5));
      }
    },
    within(60_000),
  );

  test("a ready VMM handed a launch it cannot serve: the fork gets the one-line reason", async () => {
    const { dir } = poolDir();
    expect((await poolState({ SNOWFLOCK_RUN_DIR: dir }, ["--clones", "1"])).ready).toBe(1);
    const saved = process.env.SNOWFLOCK_RUN_DIR;
    process.env.SNOWFLOCK_RUN_DIR = dir;
    try {
      const record = {
        parent: "web",
        cloneId: 1,
        descriptor: { kind: "file" as const, path: `${dir}/missing.sfd` },
        memory: { kind: "cow" as const, imagePath: `${dir}/missing.img` },
        heuristicsOff: [],
      };
      await expect(launchClone(record)).rejects.toThrow(
        /^VM 'web\.1' stopped right after starting: cannot read the descriptor .*missing\.sfd/,
      );
      expect((await poolState({ SNOWFLOCK_RUN_DIR: dir })).served).toBe(1);
    } finally {
      process.env.SNOWFLOCK_RUN_DIR = saved;
    }
  });

  test("pruning the consoles of ended VMs leaves the pool's files alone", async () => {
    const { dir, env } = poolDir();
    const state = await poolState(env, ["--clones", "1"]);
    // More ended consoles than a run directory keeps, all newer than the pool's log.
    utimesSync(join(dir, "@pool.log"), new Date(0), new Date(0));
    for (let i = 0; i < KEPT_ENDED_LOGS + 6; i++) writeFileSync(join(dir, `ended${i}.log`), "tick\n");
    pruneEndedLogs(dir);
    expect(readdirSync(dir).filter((f) => /^ended\d+\.log$/.test(f)).length).toBe(KEPT_ENDED_LOGS);
    expect(existsSync(join(dir, "@pool.sock"))).toBe(true);
    await Bun.sleep(2500); // past the keeper's check of its socket
    expect(await poolState(env)).toMatchObject({ ready: 1, pids: state.pids });
  });

  test("bad pool options are refused clearly", async () => {
    const { env } = poolDir();
    for (const [args, message] of [
      [["--clones", "999"], "bad --clones '999'"],
      [["--clones", "2", "--max-idle-memory", "lots"], "bad --max-idle-memory 'lots'"],
      [["--clones", "2", "--vcpus", "0"], "bad --vcpus '0'"],
      [["--clones", "2", "--refill-after", "-5"], "bad --refill-after '-5'"],
      [["web", "--clones", "2"], "on KVM the pool serves every VM on the host"],
    ] as const) {
      const answer = await snowflock(["pool", ...args], env);
      expect(answer.status).toBe(1);
      expect(answer.stderr).toContain(message);
    }
    const help = await snowflock(["pool", "--help"], env);
    expect(help.status).toBe(0);
    expect(help.stdout).toContain("--max-idle-memory");
  });
});
