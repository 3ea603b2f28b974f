/**
 * A long clone order is waited for while its agent reports it moving (order-watch.ts): a real
 * agent on loopback whose domains are a stand-in that starts clones slowly, with or without
 * progress lines, or whose agent stops halfway.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import type { DomainOperations, RemoteCloneRequest, StartedDomain } from "../../src/backend/backend.ts";
import { type AgentHello, startAgent } from "../../src/cluster/agent.ts";
import { agentRequest } from "../../src/cluster/agent-client.ts";
import { ClusterContext } from "../../src/cluster/cluster-context.ts";
import { sendWatchedOrder } from "../../src/cluster/order-watch.ts";
import { encodeDescriptor } from "../../src/descriptor/format.ts";
import { testRunDir } from "../support/cli.ts";
import { sampleXenDescriptor } from "../support/xen-descriptor-sample.ts";

process.env.SNOWFLOCK_RUN_DIR = testRunDir();
const secret = randomBytes(32).toString("hex");
const host = { name: "x1", namespace: null, address: "127.0.0.1", interface: "lo", mac: "02:73:66:00:00:01", agentPort: 0 };
const descriptor = Buffer.from(encodeDescriptor(sampleXenDescriptor())).toString("base64");
const order = (cloneIds: number[]) => ({
  parent: "domu",
  parentHost: "h9",
  descriptor,
  cloneIds,
  placement: {},
  memory: `tcp:10.77.0.11:4000:${"ab".repeat(32)}`,
  parentIncarnation: "run1",
  heuristicsOff: [],
  parentDomain: 7,
});
const WATCH = { pollMs: 50, quietMs: 300, capMs: 10_000 };

/** An agent whose clones take `ms` to start, saying a progress line every `everyMs` (0: never). */
function slowAgent(ms: number, everyMs: number) {
  const domains = {
    freeBytes: () => 3 << 30,
    pagedClones: () => [],
    list: async () => [],
    async startClones(request: RemoteCloneRequest): Promise<StartedDomain[]> {
      for (let waited = 0; waited < ms; waited += everyMs || ms) {
        await Bun.sleep(everyMs || ms);
        if (everyMs) request.progress?.(`fetched ${waited + everyMs} ms worth`);
      }
      return request.cloneIds.map((cloneId, i) => ({ name: `domu.${cloneId}`, cloneId, domid: 40 + i, mac: "00:16:3e:00:00:02" }));
    },
  } as unknown as DomainOperations;
  const inventory = { version: 1 as const, cluster: "unit", secret, bridge: null, mtu: 1500, hosts: [host] };
  const agent = startAgent({
    cluster: new ClusterContext("(in memory)", inventory, host, new Map()),
    backend: "xen",
    maxClones: 8,
    domains,
  });
  const target = { ...host, agentPort: agent.port };
  const parent = new ClusterContext("(in memory)", { ...inventory, hosts: [target] }, target, new Map());
  return { agent, target, parent };
}

describe("a clone order waited for while it moves", () => {
  const agents: Array<{ stop(): void }> = [];
  afterAll(() => {
    for (const a of agents) a.stop();
  });

  test("an order that takes longer than the quiet limit but reports progress is waited for; hello lists it meanwhile", async () => {
    const { agent, target, parent } = slowAgent(1200, 100);
    agents.push(agent);
    const pending = sendWatchedOrder(parent, target, order([3, 4]), WATCH);
    await Bun.sleep(400);
    const hello = (await agentRequest({ host: "x1", address: "127.0.0.1", port: agent.port }, secret, "hello")) as AgentHello;
    expect(hello.orders.map((o) => [o.parent, o.parentHost, o.cloneIds])).toEqual([["domu", "h9", [3, 4]]]);
    expect(hello.orders[0]!.quietMs).toBeLessThan(300);
    expect(hello.orders[0]!.progress).toContain("fetched");
    const result = await pending;
    expect(result.started.map((c) => c.name)).toEqual(["domu.3", "domu.4"]);
    const after = (await agentRequest({ host: "x1", address: "127.0.0.1", port: agent.port }, secret, "hello")) as AgentHello;
    expect(after.orders).toEqual([]);
  });

  test("an order that goes quiet is given up with its last word, long before the order would end", async () => {
    const { agent, target, parent } = slowAgent(5000, 0);
    agents.push(agent);
    const started = performance.now();
    await expect(sendWatchedOrder(parent, target, order([5]), WATCH)).rejects.toThrow(
      /x1's agent has reported nothing of clone\(s\) 5 of domu for \d s/,
    );
    expect(performance.now() - started).toBeLessThan(3000);
  });

  test("an agent that stops while it carries out the order: the wait ends at once with why", async () => {
    const { agent, target, parent } = slowAgent(5000, 100);
    const pending = sendWatchedOrder(parent, target, order([6]), WATCH);
    await Bun.sleep(200);
    agent.stop();
    await expect(pending).rejects.toThrow(/x1's agent (stopped answering|did not answer)|the connection closed/);
  });
});
