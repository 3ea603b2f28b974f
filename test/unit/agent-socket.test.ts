/**
 * The agent's own socket (src/cluster/agent-socket.ts) against a stand-in for the hypervisor's
 * domains: `snowflock fork --memory ondemand` on Xen goes through it (the real one, with pagers, is
 * test/xen/fork.test.ts on the paging host).
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { DomainOperations, DomainRoundOptions } from "../../src/backend/backend.ts";
import {
  agentSocketPath,
  forkThroughAgent,
  pagedClonesOfAgent,
  poolThroughAgent,
  serveAgentSocket,
} from "../../src/cluster/agent-socket.ts";
import { requestLine } from "../../src/net/line-request.ts";

const dir = mkdtempSync(join(tmpdir(), "snowflock-agent-socket-"));
const rounds: Array<{ parent: string | number; clones: number; options: DomainRoundOptions }> = [];
const pools: Array<{ parent: string; clones: number; memory: string }> = [];
const domains = {
  pool: async (parent: string, clones: number, options: { memory: string }) => {
    pools.push({ parent, clones, memory: options.memory });
    const shells = Array.from({ length: clones }, (_, i) => ({ name: `${parent}.${i + 1}`, domid: 20 + i, cloneId: i + 1 }));
    return { parent, memory: options.memory, shells, built: clones, ended: 0, shellsMs: 5, pageOutMs: 9, framesPagedOut: 32768 };
  },
  maxClones: 64,
  checkMemory: () => {},
  pagedClones: () => [{ domid: 10, parent: "web", stats: { faults: 7, pagesFetched: 5 } }],
  round: (parent: string | number, clones: number, options: DomainRoundOptions) => {
    rounds.push({ parent, clones, options });
    const started = Array.from({ length: clones }, (_, i) => ({
      name: `${parent}.${i + 1}`,
      cloneId: i + 1,
      domid: 10 + i,
      mac: "00:16:3e:00:00:01",
    }));
    return {
      prepare: async () => {},
      pause: async () => {},
      capture: async () => {},
      resume: async () => {},
      distribute: async () => undefined,
      restore: async () => ({
        backend: "xen" as const,
        parent: String(parent),
        clones: started,
        onDemand: { pagesPagedOut: 32768, pageOutMs: 1, imagePages: 32768, zeroPages: 100 },
      }),
      abandon: async () => {},
      release: async () => {},
    };
  },
} as unknown as DomainOperations;
const served = serveAgentSocket(domains, dir, () => {});
afterAll(() => {
  served.close();
  rmSync(dir, { recursive: true, force: true });
});

test("a fork through the agent runs the round there and answers with the fork's result", async () => {
  const fork = await forkThroughAgent(dir, "web", 2, "ondemand");
  expect(rounds.at(-1)).toMatchObject({ parent: "web", clones: 2, options: { memory: "ondemand", workDirectory: dir } });
  expect(fork.memory).toBe("ondemand");
  expect(fork.clones.map((c) => [c.name, c.domid])).toEqual([
    ["web.1", 10],
    ["web.2", 11],
  ]);
  expect(fork.onDemand?.pagesPagedOut).toBe(32768);
});

test("bad requests are refused with one reason each, and the agent serves on", async () => {
  const ask = (line: string) =>
    requestLine({ unix: agentSocketPath(dir) }, `${line}\n`, { timeoutMs: 5000, maxAnswerBytes: 4096, failure: (why) => new Error(why) });
  const cases: Array<[string, string]> = [
    ["not json", "the request is not JSON"],
    [JSON.stringify({ v: 2, op: "fork" }), "protocol version 2; this agent speaks 1"],
    [JSON.stringify({ v: 1, op: "kill" }), 'unknown operation "kill"'],
    [JSON.stringify({ v: 1, op: "fork", parent: "", clones: 1, memory: "eager" }), "bad parent"],
    [JSON.stringify({ v: 1, op: "fork", parent: "web", clones: 65, memory: "eager" }), "bad clone count (1 to 64)"],
    [JSON.stringify({ v: 1, op: "fork", parent: "web", clones: 1, memory: "cow" }), "bad memory mode"],
  ];
  for (const [line, error] of cases) expect(JSON.parse(await ask(line))).toEqual({ ok: false, error });
  expect((await forkThroughAgent(dir, "web", 1, "eager")).clones).toHaveLength(1);
});

test("without an agent, the fork says how to start one", async () => {
  const none = mkdtempSync(join(tmpdir(), "snowflock-no-agent-"));
  await expect(forkThroughAgent(none, "web", 1, "ondemand")).rejects.toThrow(
    `no snowflock agent runs on this host (${agentSocketPath(none)} is missing)`,
  );
  rmSync(none, { recursive: true });
});

test("the clones the agent's pagers serve come back with their counters; without an agent, or a dead one, it says why", async () => {
  expect(await pagedClonesOfAgent(dir)).toEqual({ clones: [{ domid: 10, parent: "web", stats: { faults: 7, pagesFetched: 5 } }] } as never);
  const none = mkdtempSync(join(tmpdir(), "snowflock-no-agent-"));
  expect(await pagedClonesOfAgent(none)).toEqual({ noAgent: "no snowflock agent runs here" });
  // A killed agent leaves its socket file behind: nobody listens there.
  writeFileSync(agentSocketPath(none), "");
  const dead = await pagedClonesOfAgent(none);
  expect("noAgent" in dead && dead.noAgent).toStartWith("the agent did not answer");
  rmSync(none, { recursive: true });
});

test("snowflock pool through the agent: the agent builds the shells; 0 ends them, and a fork of 0 clones is still refused", async () => {
  const pool = await poolThroughAgent(dir, "web", 2, "ondemand");
  expect(pools.at(-1)).toEqual({ parent: "web", clones: 2, memory: "ondemand" });
  expect(pool.shells.map((s) => s.name)).toEqual(["web.1", "web.2"]);
  expect((await poolThroughAgent(dir, "web", 0, "ondemand")).shells).toEqual([]);
  await expect(poolThroughAgent(dir, "web", 65, "ondemand")).rejects.toThrow("bad clone count (0 to 64)");
  await expect(forkThroughAgent(dir, "web", 0, "ondemand")).rejects.toThrow("bad clone count (1 to 64)");
});
