/**
 * Secrets never reach a command line or an environment (issue 10, item 3). A real agent, on this
 * host's loopback, is ordered to start clones whose memory comes from an mcdist family whose key
 * the test chose; while the clone processes run (waiting for a descriptor no server sends), every
 * process's arguments and environment are read from /proc, as any local user could. No KVM needed:
 * the clones never get as far as a VM.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { agentRequest } from "../../src/cluster/agent-client.ts";
import type { CloneOrder, CloneOrderResult } from "../../src/cluster/clone-order.ts";
import { encodeLaunchRecord } from "../../src/clone/launch-record.ts";
import { formatPageServer } from "../../src/memory/page-server-address.ts";
import { testRunDir } from "../support/cli.ts";
import { cloneArguments, leaks, processViews } from "../support/process-secrets.ts";
import { within } from "../support/time.ts";

const ENTRY = join(import.meta.dir, "../../bin/snowflock.ts");
const runDir = testRunDir();
const inventoryPath = join(runDir, "cluster.json");
const secret = randomBytes(32).toString("hex");
const key = randomBytes(32);
const port = 20_000 + (process.pid % 20_000);
const host = { host: "h1", address: "127.0.0.1", port };
let agent: Bun.Subprocess | undefined;

/** The clone processes this test's agent started (its run directory is in their environment). */
const ourClones = (views = processViews()) => views.filter((v) => cloneArguments(v) && v.environ.includes(`SNOWFLOCK_RUN_DIR=${runDir}`));

// The clones wait on a raw (AF_PACKET) socket, which needs root: elsewhere they would end at once.
describe.skipIf(process.getuid?.() !== 0)("clone processes started by an agent", () => {
  beforeAll(async () => {
    const h1 = { name: "h1", namespace: null, address: "127.0.0.1", interface: "lo", mac: "02:00:00:00:00:01", agentPort: port };
    const inventory = { version: 1, cluster: "sfl", secret, bridge: null, mtu: 1500, hosts: [h1] };
    writeFileSync(inventoryPath, JSON.stringify(inventory), { mode: 0o600 });
    agent = Bun.spawn([process.execPath, ENTRY, "agent", "--inventory", inventoryPath, "--host", "h1"], {
      env: { ...process.env, SNOWFLOCK_RUN_DIR: runDir },
      stdout: "ignore",
      stderr: "inherit",
    });
    for (const deadline = Date.now() + within(20_000); ; await Bun.sleep(100)) {
      if (
        await agentRequest(host, secret, "hello").then(
          () => true,
          () => false,
        )
      )
        break;
      if (Date.now() > deadline) throw new Error("the agent did not start");
    }
  });
  afterAll(async () => {
    for (const clone of ourClones()) process.kill(clone.pid, "SIGKILL");
    agent?.kill("SIGTERM");
    await agent?.exited;
  });

  test(
    "hold the family's mcdist key, yet no process shows it (or the cluster secret) in its arguments or environment",
    async () => {
      const order: CloneOrder = {
        parent: "web",
        parentHost: "h1",
        descriptor: { bytes: 4096, sha256: "ab".repeat(32) },
        cloneIds: [1, 2],
        placement: { web: "h1", "web.1": "h1", "web.2": "h1" },
        memory: formatPageServer({ kind: "mcdist", server: { kind: "packet", address: "02:00:00:00:00:09" }, family: 7, key, mtu: 1500 }),
        parentIncarnation: "test",
        heuristicsOff: ["prefetch"],
      };
      const answer = agentRequest(host, secret, "clone", order, within(60_000)) as Promise<CloneOrderResult>;
      let views = processViews();
      for (const deadline = Date.now() + within(10_000); ourClones(views).length < 2 && Date.now() < deadline; await Bun.sleep(20))
        views = processViews();
      // One look at every process, taken while both clones run (each waits for its descriptor).
      expect(
        ourClones(views)
          .map((c) => cloneArguments(c))
          .sort(),
      ).toEqual([["web.1"], ["web.2"]]);
      expect(leaks(views, [key.toString("hex"), secret])).toEqual([]);

      // No server answers: each clone ends with one clear line, reported back through the agent.
      const result = await answer;
      expect(result.started).toEqual([]);
      expect(result.failed.map((f) => f.cloneId).sort()).toEqual([1, 2]);
      for (const failure of result.failed) {
        expect(failure.error).toMatch(/^VM 'web\.[12]' (stopped right after starting: .*descriptor|did not come up within)/);
        expect(failure.error).not.toContain("\n");
      }
    },
    within(120_000),
  );
});

/** `snowflock __clone ARGS` with `handOver` on its fd 3 (nothing there when undefined): its status and stderr. */
async function cloneProcess(args: string[], handOver?: Uint8Array): Promise<{ status: number; stderr: string }> {
  const stdio = ["ignore" as const, "ignore" as const, "pipe" as const, ...(handOver ? ["pipe" as const] : [])];
  const child = spawn(process.execPath, [ENTRY, "__clone", ...args], { stdio, env: { ...process.env, SNOWFLOCK_RUN_DIR: runDir } });
  if (handOver) (child.stdio[3] as NodeJS.WritableStream).end(handOver);
  let stderr = "";
  child.stderr!.on("data", (chunk) => (stderr += chunk));
  const status = await new Promise<number>((resolve) => child.on("close", (code) => resolve(code ?? -1)));
  return { status, stderr };
}

describe("__clone started wrongly", () => {
  test("says what is wrong in one line, never a raw JavaScript error", async () => {
    const descriptor = { kind: "file" as const, path: join(runDir, "missing.sfd") };
    const record = {
      parent: "web",
      cloneId: 1,
      descriptor,
      memory: { kind: "cow" as const, imagePath: "/proc/1/fd/0" },
      heuristicsOff: [],
    };
    const cases: Array<[string[], Uint8Array | undefined, string]> = [
      [[], undefined, "__clone takes the clone's name only"],
      [["web.1"], undefined, "bad launch record: nothing was handed over on fd 3"],
      [["web.1"], new TextEncoder().encode('{"v":1}'), "bad launch record: parent must be a VM name"],
      [["web.1"], new TextEncoder().encode("x".repeat(300_000)), "bad launch record: more than 262144 bytes"],
      [["web.2"], encodeLaunchRecord(record), `__clone "web.2" was handed the launch record of web.1`],
      [["web.1"], encodeLaunchRecord(record), `cannot read the descriptor ${join(runDir, "missing.sfd")}: ENOENT`],
    ];
    for (const [args, handOver, expected] of cases) {
      const { status, stderr } = await cloneProcess(args, handOver);
      const lines = stderr.trim().split("\n");
      expect({ args, status, lines: lines.length, first: lines[0] }).toEqual({
        args,
        status: 1,
        lines: 1,
        first: expect.stringContaining(expected),
      });
      expect(stderr).not.toMatch(/TypeError|undefined is not|at .*\.ts:\d+/);
    }
  });
});
