/**
 * Local fork: the parent's memory is frozen copy-on-write at clone time, and clones are VMM
 * processes of their own that carry on with their own clone ID.
 */
import { expect, test } from "bun:test";
import { KvmMachine } from "../../src/backend/kvm/machine.ts";
import { guestImage } from "../../src/guest/image.ts";
import { GuestMemory } from "../../src/guest-memory/guest-memory.ts";
import { awaitCloneTicks, ticks } from "../support/serve-ticks.ts";
import { within } from "../support/time.ts";
import { snowflock, spawnSnowflock, testRunDir } from "../support/cli.ts";
import { pollUntil, waitUntil } from "../support/wait.ts";
import { expectForkResult } from "../support/fork-result-shape.ts";
import { describeKvm } from "../support/kvm.ts";

async function waitFor(lines: string[], match: (l: string) => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!lines.some(match)) {
    if (Date.now() > deadline) throw new Error(`no line matched; got ${JSON.stringify(lines.slice(-5))}`);
    await Bun.sleep(20);
  }
}

const digest = (bytes: Uint8Array) => new Bun.CryptoHasher("sha256").update(bytes).digest("hex");

describeKvm("local fork", () => {
  test("after the freeze, the parent's writes and each clone's writes stay private", async () => {
    const lines: string[] = [];
    const parent = KvmMachine.boot(guestImage(), 64 << 20, "serve smp=1", { vcpus: 1, onConsole: (l) => lines.push(l) });
    await parent.start();
    await waitFor(lines, (l) => l.startsWith("tick 2 "));
    parent.pause();
    const { state } = parent.capture();
    const image = parent.memory.freeze();
    const imagePath = `/proc/self/fd/${image}`;
    const frozen = digest(parent.memory.bytes);
    parent.resume();
    await waitFor(lines, (l) => l.startsWith("tick 5 "));

    const a = GuestMemory.openImage(imagePath, parent.memory.layout);
    const b = GuestMemory.openImage(imagePath, parent.memory.layout);
    expect(digest(a.bytes)).toBe(frozen); // the parent ran on and wrote, the image did not change
    expect(digest(parent.memory.bytes)).not.toBe(frozen);

    a.bytes.fill(0xab, 0x300000, 0x301000);
    expect(b.bytes[0x300000]).toBe(0);
    expect(parent.memory.bytes[0x300000]).toBe(0);
    expect(digest(GuestMemory.openImage(imagePath, parent.memory.layout).bytes)).toBe(frozen);
    a.close();

    // A clone restored over its own copy-on-write mapping carries on with its own ID.
    const cloneLines: string[] = [];
    const clone = KvmMachine.restore(state, b, { cloneId: 7, onConsole: (l) => cloneLines.push(l) });
    await clone.start();
    await waitFor(cloneLines, (l) => /^tick \d+ id 7$/.test(l));
    expect(cloneLines.filter((l) => l.startsWith("tick")).every((l) => l.endsWith(" id 7"))).toBe(true);
    expect(Number(/^tick (\d+)/.exec(cloneLines.find((l) => l.startsWith("tick"))!)![1])).toBe(3);
    await clone.stop();
    // Taken while the parent runs: a stop emits whatever half line the guest was writing.
    const parentTicks = lines.filter((l) => l.startsWith("tick"));
    await parent.stop();
    expect(parentTicks.every((l) => l.endsWith(" id 0"))).toBe(true);
  });

  test("snowflock fork: clones run as their own VMs, shown as a family, killed alone or together", async () => {
    const env = { SNOWFLOCK_RUN_DIR: testRunDir() };
    expect((await snowflock(["run", "serve", "--detach", "--name", "web", "--mem", "64M"], env)).status).toBe(0);
    const forked = await snowflock(["fork", "web", "--clones", "3", "--json"], env);
    expect(forked.status).toBe(0);
    const result = JSON.parse(forked.stdout);
    expect(result).toMatchObject({ parent: "web", memory: "cow", failed: [] });
    expectForkResult(result, "kvm");
    expect(result.clones.map((c: { name: string; cloneId: number }) => [c.name, c.cloneId])).toEqual([
      ["web.1", 1],
      ["web.2", 2],
      ["web.3", 3],
    ]);
    expect(result.pausedMs).toBeGreaterThan(0);

    for (const i of [1, 2, 3]) {
      const logs = await awaitCloneTicks(`web.${i}`, env, 1, within(10_000));
      expect(logs.length).toBeGreaterThan(0);
      expect(logs.every((l) => l.endsWith(` id ${i}`))).toBe(true);
    }
    const parentTicks = ticks((await snowflock(["logs", "web"], env)).stdout);
    expect(parentTicks.every((l) => l.endsWith(" id 0"))).toBe(true);

    const tree = (await snowflock(["ls"], env)).stdout;
    expect(tree).toMatch(/\nweb\s+running[^\n]*\n└─ web\.1\s+running[^\n]*\n└─ web\.2\s+running[^\n]*\n└─ web\.3\s+running/);
    const listed = JSON.parse((await snowflock(["ls", "--json"], env)).stdout);
    expect(listed.find((v: { name: string }) => v.name === "web.2")).toMatchObject({ parent: "web", cloneId: 2, state: "running" });

    expect((await snowflock(["kill", "web.2"], env)).status).toBe(0);
    expect(
      JSON.parse((await snowflock(["ls", "--json"], env)).stdout)
        .map((v: { name: string }) => v.name)
        .sort(),
    ).toEqual(["web", "web.1", "web.3"]);
    expect((await snowflock(["kill", "web", "--clones"], env)).status).toBe(0);
    expect(JSON.parse((await snowflock(["ls", "--json"], env)).stdout).map((v: { name: string }) => v.name)).toEqual(["web"]);
    expect((await snowflock(["fork", "web", "--clones", "1"], env)).status).toBe(0);
    expect((await snowflock(["kill", "web"], env)).status).toBe(0);
    expect(JSON.parse((await snowflock(["ls", "--json"], env)).stdout)).toEqual([]);
  });

  test("a foreground run stopped by a signal takes its clones and theirs with it, as `snowflock kill NAME` does", async () => {
    const env = { SNOWFLOCK_RUN_DIR: testRunDir() };
    const names = async () => JSON.parse((await snowflock(["ls", "--json"], env)).stdout) as Array<{ name: string; state: string }>;
    const run = spawnSnowflock(["run", "serve", "--name", "fg", "--mem", "64M"], env);
    await waitUntil(async () => (await names()).some((v) => v.name === "fg" && v.state === "running"), within(20_000), "fg runs");
    expect((await snowflock(["fork", "fg", "--clones", "2"], env)).status).toBe(0);
    // A clone's own clone: fg.1 ends it when fg ends fg.1.
    expect((await snowflock(["fork", "fg.1", "--clones", "1"], env)).status).toBe(0);
    expect((await names()).map((v) => v.name).sort()).toEqual(["fg", "fg.1", "fg.1.1", "fg.2"]);
    run.kill("SIGINT");
    await run.exited;
    // serve's clones tick until stopped: only the parent's going ends them.
    const left = await pollUntil(names, (vms) => vms.length === 0, within(10_000));
    expect(left.map((v) => v.name)).toEqual([]);
  });

  test("snowflock fork --memory ondemand: clones fetch their pages and carry on with their own IDs", async () => {
    const env = { SNOWFLOCK_RUN_DIR: testRunDir() };
    expect((await snowflock(["run", "serve", "--detach", "--name", "od", "--mem", "64M"], env)).status).toBe(0);
    const forked = await snowflock(["fork", "od", "--clones", "2", "--memory", "ondemand", "--json"], env);
    expect(forked.status).toBe(0);
    expect(JSON.parse(forked.stdout)).toMatchObject({ memory: "ondemand", failed: [] });
    for (const i of [1, 2]) {
      const own = await awaitCloneTicks(`od.${i}`, env, 1, within(10_000));
      expect(own.length).toBeGreaterThan(0);
      expect(own.every((l) => l.endsWith(` id ${i}`))).toBe(true);
    }
    expect((await snowflock(["kill", "od"], env)).status).toBe(0);
  });

  test("fork refuses bad requests clearly", async () => {
    const env = { SNOWFLOCK_RUN_DIR: testRunDir() };
    const none = await snowflock(["fork", "ghost", "--clones", "2"], env);
    expect(none.status).toBe(1);
    expect(none.stderr).toContain("no running VM named 'ghost'");
    const bad = await snowflock(["fork", "ghost", "--clones", "0"], env);
    expect(bad.stderr).toContain("bad --clones '0'");
    const path = await snowflock(["fork", "ghost", "--memory", "carrier-pigeon"], env);
    expect(path.stderr).toContain("bad --memory 'carrier-pigeon'");
  });
});
