/**
 * Issue 16: forks served by the host's pool of ready VMMs. A fork from a full pool and one from
 * an empty pool give the same clones (own IDs, own logs, one family); clones from the pool end
 * with `kill` like any other, and ending the pool leaves no process of it behind.
 */
import { afterAll, expect, test } from "bun:test";
import { processAlive } from "../../src/run-dir.ts";
import { snowflock, testRunDir } from "../support/cli.ts";
import { expectForkResult } from "../support/fork-result-shape.ts";
import { describeKvm } from "../support/kvm.ts";
import { poolProcesses } from "../support/pool.ts";
import { waitUntil } from "../support/wait.ts";
import { cloneTicks } from "../support/serve-ticks.ts";
import { within } from "../support/time.ts";

const dir = testRunDir();
const env = { SNOWFLOCK_RUN_DIR: dir };
afterAll(async () => {
  await snowflock(["kill", "web"], env);
  await snowflock(["pool", "--clones", "0"], env);
});

interface Clone {
  name: string;
  cloneId: number;
  pid: number;
  fromPool: boolean;
}

async function fork(count: number, memory: string): Promise<Clone[]> {
  const forked = await snowflock(["fork", "web", "--clones", String(count), "--memory", memory, "--json"], env);
  expect(forked.stderr).toBe("");
  const result = JSON.parse(forked.stdout);
  expectForkResult(result, "kvm");
  expect(result).toMatchObject({ memory, failed: [] });
  return result.clones;
}

/** Each clone runs on with its own ID, is listed in the family, and logs like one. */
async function expectRunningClones(clones: Clone[]): Promise<void> {
  const listed = JSON.parse((await snowflock(["ls", "--json"], env)).stdout) as Array<{ name: string; parent?: string; state: string }>;
  for (const clone of clones) {
    expect(listed.find((v) => v.name === clone.name)).toMatchObject({ parent: "web", state: "running" });
    await waitUntil(
      async () => cloneTicks((await snowflock(["logs", clone.name], env)).stdout).length > 0,
      within(20_000),
      `${clone.name} ticks`,
    );
    const ticks = cloneTicks((await snowflock(["logs", clone.name], env)).stdout);
    expect(ticks.every((l) => l.endsWith(` id ${clone.cloneId}`))).toBe(true);
  }
}

describeKvm("forks from the pool of ready VMMs", () => {
  test("a fork from the pool and one from an empty pool give the same clones; kill and ending the pool leave nothing", async () => {
    expect((await snowflock(["run", "serve", "--detach", "--name", "web", "--mem", "64M"], env)).status).toBe(0);
    // No refill while the test runs: the second fork finds the pool empty.
    const pool = JSON.parse((await snowflock(["pool", "--clones", "2", "--refill-after", "3600000", "--json"], env)).stdout).pool;
    expect(pool).toMatchObject({ size: 2, ready: 2 });

    const pooled = await fork(2, "cow");
    expect(pooled.map((c) => [c.cloneId, c.fromPool])).toEqual([
      [1, true],
      [2, true],
    ]);
    expect(pooled.map((c) => c.pid).sort()).toEqual([...pool.pids].sort());
    const spawned = await fork(2, "cow");
    expect(spawned.map((c) => [c.cloneId, c.fromPool])).toEqual([
      [3, false],
      [4, false],
    ]);
    await expectRunningClones([...pooled, ...spawned]);

    // The pool refills when told again; memory on demand is served from it the same way.
    expect(JSON.parse((await snowflock(["pool", "--clones", "2", "--refill-after", "0", "--json"], env)).stdout).pool.ready).toBe(2);
    const onDemand = await fork(1, "ondemand");
    expect(onDemand[0]).toMatchObject({ cloneId: 5, fromPool: true });
    await expectRunningClones(onDemand);

    const all = [...pooled, ...spawned, ...onDemand];
    expect((await snowflock(["kill", "web"], env)).status).toBe(0);
    await waitUntil(() => all.every((c) => !processAlive(c.pid)), within(10_000), "every clone's process has ended");
    expect(JSON.parse((await snowflock(["ls", "--json"], env)).stdout)).toEqual([]);
    expect((await snowflock(["pool", "--clones", "0"], env)).status).toBe(0);
    await waitUntil(() => poolProcesses(dir).length === 0, within(10_000), "no pool process is left");
  });
});
