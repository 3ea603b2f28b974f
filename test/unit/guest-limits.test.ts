/**
 * Per-VM limits on what a guest makes its host keep (issue 10, item 8), against the real modules:
 * a Family serving cluster hypercalls on real guest memory (the machine around it is the only stand-in),
 * a real control socket between two families for sf_send, the console log on real files, and the
 * SNOWFLOCK_GUEST_LIMITS parser. The attack against a real VM is test/integration/quotas.test.ts.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, lstatSync, mkdtempSync, readFileSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { KvmMachine } from "../../src/backend/kvm/machine.ts";
import { Family } from "../../src/cluster/family.ts";
import { serveGuestCall } from "../../src/cluster/guest-calls.ts";
import { ClusterCall, GuestError, RECV_NONBLOCK } from "../../src/guest/hypercalls.ts";
import { DEFAULT_GUEST_LIMITS, type GuestLimits, guestLimits } from "../../src/guest/limits.ts";
import { GuestMemory } from "../../src/guest-memory/guest-memory.ts";
import { ConsoleLog } from "../../src/vmm/console-log.ts";
import { serveControl } from "../../src/vmm/control-server.ts";
import { removeVmFiles, vmPaths, writeRecord } from "../../src/run-dir.ts";
import { within } from "../support/time.ts";

const SNOWFLOCK = join(import.meta.dir, "../../bin/snowflock.ts");

const SIZE = 16 * 1024 * 1024;
const memory = GuestMemory.create(SIZE, "guest-limits-test");
afterAll(() => memory.close());
const machine = { memory } as unknown as KvmMachine;
const BUFFER = 0x10000;
const OUT = 0x8000;

function family(name: string, limits: Partial<GuestLimits>, parent?: string): Family {
  const identity = { name, cmdline: "test", memoryBytes: SIZE, ...(parent ? { parent, cloneId: 1 } : {}) };
  return new Family(machine, identity, 4, "cow", undefined, "packet", [], { ...DEFAULT_GUEST_LIMITS, ...limits });
}
const call = (f: Family, nr: number, ...args: bigint[]) => serveGuestCall(f, memory, { vcpu: 0, nr, args, blockAddress: 0x7000 });
const receive = (f: Family) => call(f, ClusterCall.RECV, BigInt(BUFFER), 65536n, 0n, RECV_NONBLOCK);

describe("a VM's inbox", () => {
  test("holds at most inbox-messages messages; once one is received there is room again", async () => {
    const f = family("inbox-count", { inboxMessages: 3 });
    const answers = [1, 2, 3, 4].map((i) => f.deliver(1, new Uint8Array([i])));
    expect(answers.map((a) => a.ok)).toEqual([true, true, true, false]);
    expect(await receive(f)).toBe(1n);
    expect(f.deliver(1, new Uint8Array([5])).ok).toBe(true);
    expect(await Promise.all([1, 2, 3, 4].map(() => receive(f)))).toEqual([1n, 1n, 1n, GuestError.EAGAIN]);
  });

  test("holds at most inbox-bytes bytes", async () => {
    const f = family("inbox-bytes", { inboxBytes: 100_000 });
    expect(f.deliver(1, new Uint8Array(65536)).ok).toBe(true);
    expect(f.deliver(1, new Uint8Array(65536)).ok).toBe(false);
    expect(f.deliver(1, new Uint8Array(100_000 - 65536)).ok).toBe(true);
    expect(await receive(f)).toBe(65536n);
    expect(f.deliver(1, new Uint8Array(65536)).ok).toBe(true);
  });

  test("sf_send of the largest messages to a full inbox fails with SF_EDQUOT over a real control socket; the sender goes on", async () => {
    const runDir = mkdtempSync(join(tmpdir(), "snowflock-limits-"));
    const previous = process.env.SNOWFLOCK_RUN_DIR;
    process.env.SNOWFLOCK_RUN_DIR = runDir;
    const parent = family("lim", { inboxBytes: 2 * 65536 });
    // The parent's control socket, answering messages as its VMM does (src/vmm/vmm.ts).
    const server = serveControl(vmPaths("lim", runDir).socket, (request) =>
      request.op === "message"
        ? parent.deliver(request.from, new Uint8Array(Buffer.from(request.data, "base64")))
        : { ok: false, error: "unexpected" },
    );
    try {
      const clone = family("lim.1", {}, "lim");
      const sends = [];
      for (let i = 0; i < 3; i++) sends.push(await call(clone, ClusterCall.SEND, 0n, BigInt(BUFFER), 65536n));
      expect(sends).toEqual([65536n, 65536n, GuestError.EDQUOT]);
      expect(await receive(parent)).toBe(65536n);
      expect(await call(clone, ClusterCall.SEND, 0n, BigInt(BUFFER), 65536n)).toBe(65536n);
      // A member that is not there is still "no such member", not a full inbox.
      expect(await call(family("other.1", {}, "other"), ClusterCall.SEND, 0n, BigInt(BUFFER), 2n)).toBe(GuestError.ESRCH);
    } finally {
      server.close();
      if (previous === undefined) delete process.env.SNOWFLOCK_RUN_DIR;
      else process.env.SNOWFLOCK_RUN_DIR = previous;
    }
  });
});

describe("tickets and checkpoints", () => {
  test("at most `tickets` unjoined tickets; the next request fails with SF_EDQUOT and writes nothing", async () => {
    const f = family("tickets", { tickets: 3 });
    const view = new DataView(memory.bytes.buffer, memory.bytes.byteOffset + OUT, 8);
    const tickets = [];
    for (let i = 0; i < 3; i++) tickets.push(await call(f, ClusterCall.REQUEST_TICKET, 1n, BigInt(OUT)));
    expect(tickets).toEqual([1n, 2n, 3n]);
    view.setBigUint64(0, 99n, true);
    expect(await call(f, ClusterCall.REQUEST_TICKET, 1n, BigInt(OUT))).toBe(GuestError.EDQUOT);
    expect(view.getBigUint64(0, true)).toBe(99n);
    // Tickets refused were never issued: they are unknown, not used.
    expect(await call(f, ClusterCall.CLONE, 4n)).toBe(GuestError.EINVAL);
  });

  test("past `checkpoints` live checkpoints, sf_checkpoint_parent fails with SF_EDQUOT before touching the VM", async () => {
    // The machine here has nothing but memory: a capture would throw; the limit must answer first.
    expect(await call(family("checkpoints", { checkpoints: 0 }), ClusterCall.CHECKPOINT_PARENT)).toBe(GuestError.EDQUOT);
    // Releasing one this VM does not hold is a bad argument, not a crash.
    for (const id of [0n, 1n, (1n << 64n) - 1n])
      expect(await call(family("release", {}), ClusterCall.RELEASE_CHECKPOINT, id)).toBe(GuestError.EINVAL);
  });
});

describe("the console log", () => {
  const dir = mkdtempSync(join(tmpdir(), "snowflock-console-"));

  test("keeps the newest lines within console-memory and counts the rest", () => {
    const log = new ConsoleLog(join(dir, "ring.log"), { consoleMemory: 10 * (100 + 64), consoleLog: 1 << 20 });
    for (let i = 0; i < 1000; i++) log.add(`${i}`.padStart(99, "."));
    log.close();
    const lines = log.lines();
    expect(lines).toEqual(Array.from({ length: 10 }, (_, i) => `${990 + i}`.padStart(99, ".")));
    expect({ total: log.total, dropped: log.dropped }).toEqual({ total: 1000, dropped: 990 });
  });

  test("a partial line (a prompt) is in the log at once; the whole line then adds only the rest; another line starts afresh", () => {
    const path = join(dir, "partial.log");
    const log = new ConsoleLog(path, { consoleMemory: 1 << 20, consoleLog: 1 << 20 });
    log.add("boot");
    log.partial("~ # ");
    expect(readFileSync(path, "utf8")).toBe("boot\n~ # ");
    log.partial("~ # ls");
    log.add("~ # ls");
    log.partial("x");
    log.add("other");
    log.close();
    expect(readFileSync(path, "utf8")).toBe("boot\n~ # ls\nx\nother\n");
    expect(log.lines()).toEqual(["boot", "~ # ls", "other"]);
    expect(log.total).toBe(3);
  });

  test("rotates NAME.log to NAME.log.1 at console-log bytes: two files, each within the cap, nothing lost in between", () => {
    const path = join(dir, "rotate.log");
    const cap = 64 * 1024;
    const log = new ConsoleLog(path, { consoleMemory: 1 << 20, consoleLog: cap });
    const line = (i: number) => `line ${i} `.padEnd(999, "x");
    for (let i = 0; i < 1000; i++) log.add(line(i));
    log.close();
    expect(statSync(path).size).toBeLessThanOrEqual(cap);
    expect(statSync(`${path}.1`).size).toBeLessThanOrEqual(cap);
    const older = readFileSync(`${path}.1`, "utf8").trimEnd().split("\n");
    const newer = readFileSync(path, "utf8").trimEnd().split("\n");
    const kept = [...older, ...newer];
    expect(kept).toEqual(Array.from({ length: kept.length }, (_, i) => line(1000 - kept.length + i)));
    expect(kept.length).toBeGreaterThan(cap / 1000);
  });

  test("`snowflock logs --follow` goes on across rotations: it prints every line, in order", async () => {
    const runDir = mkdtempSync(join(tmpdir(), "snowflock-follow-"));
    const previous = process.env.SNOWFLOCK_RUN_DIR;
    process.env.SNOWFLOCK_RUN_DIR = runDir;
    try {
      // A VM record naming this (live) process: `logs --follow` follows until the record goes.
      writeRecord({ name: "chatty", pid: process.pid, workload: "test", memoryBytes: SIZE, vcpus: 1, startedAt: new Date().toISOString() });
      const log = new ConsoleLog(vmPaths("chatty", runDir).log, { consoleMemory: 1 << 20, consoleLog: 4096 });
      log.add("first");
      const env = { ...process.env, SNOWFLOCK_RUN_DIR: runDir };
      const follower = Bun.spawn([process.execPath, SNOWFLOCK, "logs", "chatty", "--follow"], {
        env,
        stdout: "pipe",
        timeout: within(60_000),
      });
      const reader = follower.stdout.getReader();
      let printed = "";
      const awaitPrinted = async (line: string) => {
        while (!printed.endsWith(`${line}\n`)) {
          const { value, done } = await reader.read();
          if (done) throw new Error(`logs --follow ended before printing '${line}'`);
          printed += new TextDecoder().decode(value);
        }
      };
      await awaitPrinted("first");
      // Batches of half a log file: the follower is shown to have caught up before the next, so each rotation finds it attached.
      const written = ["first"];
      for (let batch = 0; batch < 10; batch++) {
        for (let i = 0; i < 20; i++) log.add(written[written.push(`line ${batch * 20 + i} `.padEnd(99, ".")) - 1]!);
        await awaitPrinted(written.at(-1)!);
      }
      log.close();
      removeVmFiles("chatty", { keepLog: true }, runDir);
      await follower.exited;
      expect(printed.trimEnd().split("\n")).toEqual(written);
      expect(existsSync(`${vmPaths("chatty", runDir).log}.1`)).toBe(true);
    } finally {
      if (previous === undefined) delete process.env.SNOWFLOCK_RUN_DIR;
      else process.env.SNOWFLOCK_RUN_DIR = previous;
    }
  });

  test("a stale NAME.log.1 goes, and a link planted at NAME.log is replaced, never followed", () => {
    const path = join(dir, "planted.log");
    const victim = join(dir, "victim");
    writeFileSync(victim, "keep me\n");
    symlinkSync(victim, path);
    writeFileSync(`${path}.1`, "an earlier VM's lines\n");
    const log = new ConsoleLog(path, DEFAULT_GUEST_LIMITS);
    log.add("hello");
    log.close();
    expect(readFileSync(victim, "utf8")).toBe("keep me\n");
    expect(lstatSync(path).isSymbolicLink()).toBe(false);
    expect(readFileSync(path, "utf8")).toBe("hello\n");
    expect(existsSync(`${path}.1`)).toBe(false);
  });
});

describe("SNOWFLOCK_GUEST_LIMITS", () => {
  test("defaults without it; each key overrides one limit, sizes with K/M/G", () => {
    expect(guestLimits({})).toEqual(DEFAULT_GUEST_LIMITS);
    const text = "inbox-messages=8, inbox-bytes=1M,console-memory=64K,console-log=2M,checkpoints=1,tickets=0";
    expect(guestLimits({ SNOWFLOCK_GUEST_LIMITS: text })).toEqual({
      inboxMessages: 8,
      inboxBytes: 1 << 20,
      consoleMemory: 64 << 10,
      consoleLog: 2 << 20,
      checkpoints: 1,
      tickets: 0,
    });
  });

  for (const bad of ["inbox=8", "tickets=-1", "tickets=many", "console-log=12Q", "checkpoints"]) {
    test(`'${bad}' is refused with one line naming the variable and the keys`, () => {
      expect(() => guestLimits({ SNOWFLOCK_GUEST_LIMITS: bad })).toThrow(`bad SNOWFLOCK_GUEST_LIMITS entry '${bad}'`);
    });
  }
});
