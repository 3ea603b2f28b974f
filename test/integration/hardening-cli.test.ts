/**
 * Issue 10 (items 5, 6, 9, 10): what a stale record, a careless `--inventory`, a planted file or a
 * hostile name can make the CLI do. Each test runs the real CLI against real files, processes and
 * (where needed) real network namespaces; none needs KVM (the descriptor file's mode, which does, is
 * in hardening-descriptor.test.ts).
 */
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, chownSync, existsSync, readdirSync, readFileSync, symlinkSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { listNamespaces } from "../../src/cluster/netns.ts";
import { destroyTestHosts } from "../../src/cluster/test-hosts.ts";
import { processStartTime } from "../../src/run-dir.ts";
import { snowflock, testRunDir } from "../support/cli.ts";
import { describeNetns } from "../support/netns.ts";
import { within } from "../support/time.ts";

const spawned: Array<{ pid: number; kill(signal?: number): void }> = [];
afterAll(() => {
  for (const child of spawned) child.kill(9);
});

/** A real process that has nothing to do with snowflock. */
function unrelatedProcess() {
  const child = Bun.spawn(["sleep", "60"], { stdout: "ignore", stderr: "ignore" });
  spawned.push(child);
  return child;
}

const alive = (pid: number) => existsSync(`/proc/${pid}`) && !readFileSync(`/proc/${pid}/stat`, "utf8").includes(") Z ");

/** Plants NAME.json as a VMM would have written it, for process `pid` (started at `pidStartTime`). */
function plantRecord(dir: string, name: string, pid: number, fields: Record<string, unknown> = {}): string {
  const path = join(dir, `${name}.json`);
  const record = { name, pid, workload: "serve", memoryBytes: 64 << 20, vcpus: 1, startedAt: new Date().toISOString(), ...fields };
  writeFileSync(path, JSON.stringify(record), { mode: 0o600 });
  return path;
}

describe("item 5: a VMM's PID reused by another process", () => {
  test("ls does not show the ghost, kill refuses and cleans up, the process survives", async () => {
    const dir = testRunDir();
    const env = { SNOWFLOCK_RUN_DIR: dir };
    const sleeper = unrelatedProcess();
    const started = processStartTime(sleeper.pid)!;
    expect(started).toMatch(/^\d+$/);
    // The VMM that had this PID died by SIGKILL: its record names the PID with its own (earlier) start time.
    const ghost = plantRecord(dir, "ghost", sleeper.pid, { pidStartTime: String(BigInt(started) - 1n) });
    // A record of an older snowflock, without a start time, cannot prove it either.
    const old = plantRecord(dir, "old", sleeper.pid);

    const ls = await snowflock(["ls", "--json"], env);
    expect(ls.status).toBe(0);
    expect(JSON.parse(ls.stdout)).toEqual([]);
    expect(existsSync(ghost)).toBe(false);
    expect(existsSync(old)).toBe(false);

    plantRecord(dir, "ghost", sleeper.pid, { pidStartTime: String(BigInt(started) - 1n) });
    const kill = await snowflock(["kill", "ghost"], env);
    expect(kill.status).toBe(1);
    expect(kill.stderr).toContain("no running VM named 'ghost'");
    expect(existsSync(ghost)).toBe(false);
    await Bun.sleep(200);
    expect(alive(sleeper.pid)).toBe(true);
  });
});

describe("item 9: the run directory and the files in it", () => {
  test("a run directory others can write, or someone else's, is refused", async () => {
    const dir = testRunDir();
    chmodSync(dir, 0o777);
    const ls = await snowflock(["ls"], { SNOWFLOCK_RUN_DIR: dir });
    expect(ls.status).toBe(1);
    expect(ls.stderr).toContain(`the run directory ${dir} is writable by others (mode 0777)`);
    const run = await snowflock(["run", "hello", "--detach", "--name", "x"], { SNOWFLOCK_RUN_DIR: dir });
    expect(run.status).toBe(1);
    expect(run.stderr).toContain("is writable by others");
    expect(readdirSync(dir)).toEqual([]);

    if (process.getuid?.() === 0) {
      chmodSync(dir, 0o700);
      chownSync(dir, 65534, 65534);
      const foreign = await snowflock(["ls"], { SNOWFLOCK_RUN_DIR: dir });
      expect(foreign.status).toBe(1);
      expect(foreign.stderr).toContain(`the run directory ${dir} belongs to uid 65534, not to you (uid 0)`);
    }
  });

  test("a link planted at NAME.err is not followed; a failed --detach leaves no file", async () => {
    const dir = testRunDir();
    const victim = join(testRunDir(), "victim");
    writeFileSync(victim, "precious\n");
    symlinkSync(victim, join(dir, "x.err"));
    // The detached VMM refuses the memory size itself (no KVM needed) and exits.
    const run = await snowflock(["run", "sha256", "size=64M", "--mem", "32M", "--detach", "--name", "x"], { SNOWFLOCK_RUN_DIR: dir });
    expect(run.status).toBe(1);
    expect(run.stderr).toContain("VM 'x' stopped right after starting");
    expect(run.stderr).toContain("needs at least");
    expect(readFileSync(victim, "utf8")).toBe("precious\n");
    expect(readdirSync(dir)).toEqual([]);
  });

  test("an inventory that is no regular file, too large, or readable by others", async () => {
    const dir = testRunDir();
    const env = { SNOWFLOCK_RUN_DIR: dir };
    const fifo = join(dir, "fifo.json");
    expect(Bun.spawnSync(["mkfifo", fifo]).exitCode).toBe(0);
    const fromFifo = await snowflock(["cluster", "status", "--inventory", fifo], env, 20_000);
    expect(fromFifo.status).toBe(1);
    expect(fromFifo.stderr).toContain(`the cluster inventory ${fifo} is not a regular file`);
    const viaCluster = await snowflock(["run", "hello", `--cluster=${fifo}`], env, 20_000);
    expect(viaCluster.status).toBe(1);
    expect(viaCluster.stderr).toContain("is not a regular file");

    const big = join(dir, "big.json");
    writeFileSync(big, " ".repeat(2 << 20), { mode: 0o600 });
    const fromBig = await snowflock(["cluster", "status", "--inventory", big], env);
    expect(fromBig.status).toBe(1);
    expect(fromBig.stderr).toContain(`the cluster inventory ${big} is larger than 1M`);

    const readable = join(dir, "readable.json");
    const host = {
      name: "h1",
      namespace: "sfnone-h1",
      address: "10.77.0.11",
      interface: "eth0",
      mac: "02:73:66:00:00:01",
      agentPort: 7070,
    };
    const secret = "ab".repeat(32);
    writeFileSync(readable, JSON.stringify({ version: 1, cluster: "sfnone", secret, bridge: "sfnonebr0", mtu: 1500, hosts: [host] }));
    chmodSync(readable, 0o644);
    const status = await snowflock(["cluster", "status", "--inventory", readable, "--json"], env);
    expect(status.status).toBe(0);
    expect(status.stderr.match(/holds the cluster secret but is readable by others \(mode 644\)/g)).toHaveLength(1);
    chmodSync(readable, 0o600);
    expect((await snowflock(["cluster", "status", "--inventory", readable, "--json"], env)).stderr).not.toContain("readable by others");
  });
});

describe("item 10: smaller ones", () => {
  test("logs --follow ends (without spinning) when the log shrank and the VM stopped", async () => {
    const dir = testRunDir();
    const vm = unrelatedProcess();
    plantRecord(dir, "web", vm.pid, { pidStartTime: processStartTime(vm.pid) });
    const log = join(dir, "web.log");
    writeFileSync(log, "tick\n".repeat(20_000), { mode: 0o600 });
    const follower = Bun.spawn([process.execPath, join(import.meta.dir, "../../bin/snowflock.ts"), "logs", "web", "--follow"], {
      env: { ...process.env, SNOWFLOCK_RUN_DIR: dir },
      stdout: "pipe",
      stderr: "pipe",
    });
    spawned.push(follower);
    const reader = follower.stdout.getReader();
    let seen = 0;
    while (seen < 100_000) seen += (await reader.read()).value?.length ?? 0;
    truncateSync(log, 10);
    vm.kill(9);
    await vm.exited;
    const ended = await Promise.race([follower.exited, Bun.sleep(within(10_000)).then(() => "still running")]);
    expect(ended).toBe(0);
  });

  test("logs to a terminal shows a guest's escape sequences escaped; piped or --raw, as they are", async () => {
    const dir = testRunDir();
    const text = "tick \x1b]0;owned\x07 \x1b[2J done\n";
    writeFileSync(join(dir, "web.log"), text, { mode: 0o600 });
    const cli = `${process.execPath} ${join(import.meta.dir, "../../bin/snowflock.ts")} logs web`;
    // script(1) gives the command a terminal; what it printed there is in its output.
    const onTerminal = (args: string) =>
      Bun.spawnSync(["script", "-qec", `${cli}${args}`, "/dev/null"], {
        env: { ...process.env, SNOWFLOCK_RUN_DIR: dir },
        stdout: "pipe",
      }).stdout.toString();
    expect(onTerminal("")).toContain("tick \\x1b]0;owned\\x07 \\x1b[2J done");
    expect(onTerminal("")).not.toContain("\x1b");
    expect(onTerminal(" --raw")).toContain(text.trim());
    const piped = await snowflock(["logs", "web"], { SNOWFLOCK_RUN_DIR: dir });
    expect(piped.stdout).toBe(text);
  });

  test("unknown global options and negative numbers are refused by name", async () => {
    const env = { SNOWFLOCK_RUN_DIR: testRunDir() };
    for (const args of [["--bogus"], ["--bogus", "ls"]]) {
      const result = await snowflock(args, env);
      expect(result.status).toBe(1);
      expect(result.stderr).toContain("Unknown option `--bogus`");
    }
    const fork = await snowflock(["fork", "web", "--clones", "-1"], env);
    expect(fork.status).toBe(1);
    expect(fork.stderr).toContain("bad --clones '-1'");
    const vcpus = await snowflock(["run", "hello", "--vcpus", "-2"], env);
    expect(vcpus.status).toBe(1);
    expect(vcpus.stderr).toContain("bad --vcpus '-2'");
  });

  test("clones= is checked on the host (1 to 256)", async () => {
    const env = { SNOWFLOCK_RUN_DIR: testRunDir() };
    for (const clones of ["0", "257", "100000"]) {
      const result = await snowflock(["run", "sha256-par", "size=1M", `clones=${clones}`, "--detach", "--name", `p${clones}`], env);
      expect(result.status).toBe(1);
      expect(result.stderr).toContain(`bad clones '${clones}' for workload sha256-par`);
      expect(result.stderr).toContain("from 1 to 256");
    }
  });

  test("names and workloads reach the terminal without their control characters", async () => {
    const dir = testRunDir();
    const vm = unrelatedProcess();
    plantRecord(dir, "web", vm.pid, { pidStartTime: processStartTime(vm.pid), workload: "\u001b]0;owned\u0007serve\u009b2J" });
    const ls = await snowflock(["ls"], { SNOWFLOCK_RUN_DIR: dir });
    expect(ls.status).toBe(0);
    expect(ls.stdout).toContain("\\x1b]0;owned\\x07serve\\x9b2J");
    expect(ls.stdout).not.toMatch(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/);
    const kill = await snowflock(["kill", "\u001b[2Jweb"], { SNOWFLOCK_RUN_DIR: dir });
    expect(kill.status).toBe(1);
    expect(kill.stderr).toContain("bad VM name '\\x1b[2Jweb'");
    expect(kill.stderr).not.toContain("\u001b[2J");
  });
});

const PREFIX = `sfk${process.pid % 1000}`;

describeNetns("items 6 and 10: cluster down refuses guesses; dead agents are flagged and restarted", () => {
  const dir = testRunDir();
  const env = { SNOWFLOCK_RUN_DIR: dir };
  const inventory = join(dir, "mine.json");
  afterAll(async () => {
    await destroyTestHosts(PREFIX, { inventoryPath: null }).catch(() => {});
  });
  const ours = async () => (await listNamespaces()).filter((n) => n.startsWith(`${PREFIX}-`)).sort();

  test("down with a missing or mistyped inventory fails and removes nothing", async () => {
    const up = await snowflock(["cluster", "up", "--hosts", "1", "--prefix", PREFIX, "--inventory", inventory], env);
    expect(up.status).toBe(0);
    expect(await ours()).toEqual([`${PREFIX}-h1`, `${PREFIX}-switch`]);
    expect(JSON.parse(readFileSync(inventory, "utf8")).mtu).toBe(9000); // jumbo frames unless --mtu says otherwise

    for (const args of [["--inventory", "/nonexistent/cluster.json"], ["--inventory", `${inventory}x`], []]) {
      const down = await snowflock(["cluster", "down", ...args], env);
      expect(down.status).toBe(1);
      expect(down.stderr).toContain("nothing removed");
      expect(down.stderr).toContain(PREFIX);
      expect(await ours()).toEqual([`${PREFIX}-h1`, `${PREFIX}-switch`]);
      expect(existsSync(inventory)).toBe(true);
    }
  });

  test("status flags a dead agent and restart-agents starts it again", async () => {
    const pids = Bun.spawnSync(["ip", "netns", "pids", `${PREFIX}-h1`])
      .stdout.toString()
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
    expect(pids.length).toBeGreaterThan(0);
    for (const pid of pids) process.kill(pid, "SIGKILL");
    let status = await snowflock(["cluster", "status", "--inventory", inventory], env);
    for (let i = 0; i < 50 && !status.stderr.includes("agent not running"); i++) {
      await Bun.sleep(100);
      status = await snowflock(["cluster", "status", "--inventory", inventory], env);
    }
    expect(status.stderr).toContain(`agent not running on h1: \`snowflock cluster restart-agents --inventory ${inventory}\``);

    const restart = await snowflock(["cluster", "restart-agents", "--inventory", inventory, "--json"], env);
    expect(restart.status).toBe(0);
    expect(JSON.parse(restart.stdout)).toEqual({ restarted: ["h1"] });
    const after = await snowflock(["cluster", "status", "--inventory", inventory, "--json"], env);
    expect(JSON.parse(after.stdout).hosts.map((h: { agent: string }) => h.agent)).toEqual(["listening"]);
    const again = await snowflock(["cluster", "restart-agents", "--inventory", inventory, "--json"], env);
    expect(JSON.parse(again.stdout)).toEqual({ restarted: [] });

    const down = await snowflock(["cluster", "down", "--inventory", inventory], env);
    expect(down.status).toBe(0);
    expect(await ours()).toEqual([]);
  });
});
