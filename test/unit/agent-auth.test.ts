/** The agent's control plane refuses anything not signed with the cluster's secret, and replays. */
import { afterAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { statSync } from "node:fs";
import { join } from "node:path";
import { agentRequest } from "../../src/cluster/agent-client.ts";
import { encodeRequest, MAX_BODY_BYTES, MAX_HEADER_BYTES, signRequest } from "../../src/cluster/agent-protocol.ts";
import { type AgentHello, type AgentOptions, startAgent } from "../../src/cluster/agent.ts";
import type { FamilyEvent } from "../../src/cluster/family-event.ts";
import type { CloneOrderResult } from "../../src/cluster/clone-order.ts";
import type { DomainListing, DomainOperations, RemoteCloneRequest, StartedDomain } from "../../src/backend/backend.ts";
import type { XenState } from "../../src/backend/xen/persist.ts";
import { encodeDescriptor } from "../../src/descriptor/format.ts";
import { SnowflockError } from "../../src/errors.ts";
import { sampleDescriptor } from "../support/descriptor-sample.ts";
import { SAMPLE_XEN_CONFIG, sampleXenDescriptor } from "../support/xen-descriptor-sample.ts";
import { ClusterContext } from "../../src/cluster/cluster-context.ts";
import { testRunDir } from "../support/cli.ts";

process.env.SNOWFLOCK_RUN_DIR = testRunDir();
const secret = randomBytes(32).toString("hex");
const host = { name: "h1", namespace: null, address: "127.0.0.1", interface: "lo", mac: "02:73:66:00:00:01", agentPort: 0 };
const inventory = { version: 1 as const, cluster: "unit", secret, bridge: null, mtu: 1500, hosts: [host] };
const startH1 = () => startAgent({ cluster: new ClusterContext("(in memory)", inventory, host, new Map()), backend: "kvm", maxClones: 4 });
const agent = startH1();
const target = { host: "h1", address: "127.0.0.1", port: agent.port };
afterAll(() => agent.stop());

/** A request as an agent client sends it, with its header fields changed by `header`. */
function wire(op: "hello" | "relay", body: unknown, header: Record<string, unknown> = {}, hostName = "h1", ts?: number): string {
  const request = signRequest(secret, hostName, op, body, ts);
  return encodeRequest({ ...request, header: { ...request.header, ...header } });
}

/** Sends raw bytes to the agent on `port` and returns the first answer line. */
async function raw(text: string, port = agent.port): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let buffer = "";
    let pending = new Uint8Array(0);
    Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: {
        open(s) {
          pending = new TextEncoder().encode(text);
          pending = pending.subarray(Math.max(0, s.write(pending)));
        },
        // A large request goes out over several writes.
        drain(s) {
          if (pending.byteLength > 0) pending = pending.subarray(Math.max(0, s.write(pending)));
        },
        data(s, chunk) {
          buffer += chunk.toString();
          if (buffer.includes("\n")) {
            s.end();
            resolve(JSON.parse(buffer.slice(0, buffer.indexOf("\n"))));
          }
        },
        close: () => (buffer.includes("\n") ? undefined : reject(new Error("closed without an answer"))),
      },
    }).catch(reject);
  });
}

describe("agent authentication", () => {
  test("a request signed with the cluster's secret is answered, and the answer verifies", async () => {
    expect(await agentRequest(target, secret, "hello")).toMatchObject({ host: "h1", pid: process.pid });
  });

  test("an unauthenticated request is refused", async () => {
    const header = {
      v: 2,
      op: "hello",
      host: "h1",
      ts: Date.now(),
      nonce: "00".repeat(16),
      bodyBytes: 4,
      bodySha256: "00".repeat(32),
      mac: "00".repeat(32),
    };
    const answer = await raw(`${JSON.stringify(header)}\nnull`);
    expect(answer).toEqual({ ok: false, error: "unauthenticated: the request is not signed with this cluster's secret" });
  });

  test("another cluster's secret, a tampered body or header, another host, a stale or replayed request: each refused and counted", async () => {
    const refusedBefore = ((await agentRequest(target, secret, "hello")) as AgentHello).refused;
    await expect(agentRequest(target, randomBytes(32).toString("hex"), "hello")).rejects.toThrow("not signed with this cluster's secret");
    const signed = wire("relay", { a: 1 });
    expect((await raw(signed.replace('{"a":1}', '{"a":2}'))).error).toContain("not the one its header was signed for");
    expect((await raw(wire("relay", { a: 1 }, { op: "hello" }))).error).toContain("not signed");
    expect((await raw(wire("hello", null, {}, "h2"))).error).toContain("for host h2");
    expect((await raw(wire("hello", null, {}, "h1", Date.now() - 5 * 60_000))).error).toContain("too old");
    const once = wire("hello", null);
    expect((await raw(once)).ok).toBe(true);
    expect((await raw(once)).error).toContain("replay");
    // Six refusals, as hello (so `cluster status`) tells them.
    expect(((await agentRequest(target, secret, "hello")) as AgentHello).refused).toBe(refusedBefore + 6);
  });

  test("garbage and oversized input are refused, an unauthenticated peer after one header line's bytes", async () => {
    expect((await raw("not json\n")).error).toContain("unauthenticated");
    // No newline within the header's limit: refused without waiting for one (the old agent took 16 Mi characters).
    expect((await raw("x".repeat(MAX_HEADER_BYTES + 1))).error).toBe("request too large");
    expect((await raw("x".repeat(4 * 1024 * 1024))).error).toBe("request too large");
    // A signed header announcing a body over the limit is refused before any of the body is read.
    const huge = signRequest(secret, "h1", "relay", "x".repeat(MAX_BODY_BYTES));
    expect((await raw(`${JSON.stringify(huge.header)}\n`)).error).toContain(
      `body of ${MAX_BODY_BYTES + 2} bytes is over ${MAX_BODY_BYTES}`,
    );
    expect(agent.stats().refused).toBeGreaterThan(5);
    // The agent still serves good requests.
    expect(await agentRequest(target, secret, "hello")).toMatchObject({ host: "h1" });
  });

  test("once its header is authenticated, a request may carry a body of megabytes (a clone order's descriptor)", async () => {
    const body = { vm: 7, descriptor: "A".repeat(8 * 1024 * 1024) };
    await expect(agentRequest(target, secret, "relay", body)).rejects.toThrow("refused: relay needs a VM name");
  });

  test("an answer not signed by the agent is rejected by the client", async () => {
    const impostor = Bun.listen({
      hostname: "127.0.0.1",
      port: 0,
      socket: { data: (s) => void s.write(`${JSON.stringify({ ok: true, nonce: "x", body: { host: "h1" }, mac: "00".repeat(32) })}\n`) },
    });
    try {
      await expect(agentRequest({ host: "h1", address: "127.0.0.1", port: impostor.port }, secret, "hello")).rejects.toThrow("refused");
    } finally {
      impostor.stop(true);
    }
  });
});

describe("replay protection across a restart", () => {
  test("a request accepted before the agent restarts is refused after it; the journal is private", async () => {
    const first = startH1();
    const captured = wire("hello", null);
    expect((await raw(captured, first.port)).ok).toBe(true);
    first.stop();
    const second = startH1();
    try {
      expect((await raw(captured, second.port)).error).toBe("unauthenticated: the request was already used (replay)");
      expect((await raw(wire("hello", null), second.port)).ok).toBe(true);
      expect(statSync(join(process.env.SNOWFLOCK_RUN_DIR!, "agent-h1.nonces")).mode & 0o777).toBe(0o600);
    } finally {
      second.stop();
    }
  });
});

describe("an agent whose hypervisor runs the VMs (a Xen dom0): clone orders start domains", () => {
  /** The dom0's domains (a stand-in for the Xen backend): what startClones was asked, what it started. */
  const standIn = (fail?: string, startMs = 0) => {
    const asked: RemoteCloneRequest[] = [];
    const running: DomainListing[] = [];
    const domains = {
      freeBytes: () => 3 << 30,
      list: async () => running,
      // Domain 41 pages its memory in on demand: its pager's counters so far.
      pagedClones: () => [{ domid: 41, parent: "domu", stats: { faults: 12, pagesFetched: 345 } }],
      async startClones(request: RemoteCloneRequest): Promise<StartedDomain[]> {
        asked.push(request);
        if (startMs > 0) await Bun.sleep(startMs);
        if (fail) throw new SnowflockError("VM_STATE", fail);
        return request.cloneIds.map((cloneId, i) => {
          const clone = { name: `${request.parentName}.${cloneId}`, cloneId, domid: 40 + i, mac: "00:16:3e:00:00:02" };
          running.push({ name: clone.name, id: clone.domid, state: "running", memoryBytes: 0, vcpus: 1, cloneId, family: 0, depth: 0 });
          return clone;
        });
      },
    };
    return { asked, running, domains: domains as unknown as DomainOperations };
  };
  const xenHost = { ...host, name: "x1" };
  const xenInventory = { ...inventory, hosts: [xenHost] };
  const order = (descriptor: string | object) => ({
    parent: "domu",
    parentHost: "h9",
    descriptor,
    cloneIds: [3, 4],
    placement: { "domu.3": "x1", "domu.4": "x1" },
    memory: `tcp:10.77.0.11:4000:${"ab".repeat(32)}`,
    parentIncarnation: "run1",
    heuristicsOff: [],
    parentDomain: 7,
    replySeq: "123",
  });
  const start = (domains: DomainOperations, maxClones = 4, familyEvents?: AgentOptions["familyEvents"]) =>
    startAgent({
      cluster: new ClusterContext("(in memory)", xenInventory, xenHost, new Map()),
      backend: "xen",
      maxClones,
      domains,
      familyEvents,
    });

  test("hello gives the hypervisor's free memory; an order's domains start from its descriptor and count as this host's clones", async () => {
    const { asked, domains } = standIn();
    const dom0 = start(domains);
    try {
      const at = { host: "x1", address: "127.0.0.1", port: dom0.port };
      expect(await agentRequest(at, secret, "hello")).toMatchObject({ host: "x1", backend: "xen", maxClones: 4, freeBytes: 3 << 30 });
      const descriptor = Buffer.from(encodeDescriptor(sampleXenDescriptor())).toString("base64");
      const result = (await agentRequest(at, secret, "clone", order(descriptor))) as CloneOrderResult;
      expect(result.started.map((c) => [c.name, c.cloneId, c.domid])).toEqual([
        ["domu.3", 3, 40],
        ["domu.4", 4, 41],
      ]);
      expect(result.failed).toEqual([]);
      expect(asked).toHaveLength(1);
      expect(asked[0]).toMatchObject({
        parentName: "domu",
        parentDomain: 7,
        parentHost: "h9",
        replySeq: "123",
        cloneIds: [3, 4],
        server: order("").memory,
        memory: "eager",
      });
      expect((asked[0]!.snapshot.state as XenState).config).toBe(SAMPLE_XEN_CONFIG);
      const hello = (await agentRequest(at, secret, "hello")) as AgentHello;
      expect(hello.clones.map((c) => [c.name, c.domid, c.parentHost, c.faults, c.pagesFetched])).toEqual([
        ["domu.3", 40, "h9", undefined, undefined],
        ["domu.4", 41, "h9", 12, 345],
      ]);
      // Two run now: three more would pass the limit of 4.
      await expect(agentRequest(at, secret, "clone", { ...order(descriptor), cloneIds: [5, 6, 7] })).rejects.toThrow(
        "host x1 runs 2 clone(s); 3 more would pass its limit of 4",
      );
    } finally {
      dom0.stop();
    }
  });

  test("two orders at once do not both take the same room: the second counts the first's clones still starting", async () => {
    const { asked, domains } = standIn(undefined, 300);
    const dom0 = start(domains);
    try {
      const at = { host: "x1", address: "127.0.0.1", port: dom0.port };
      const descriptor = Buffer.from(encodeDescriptor(sampleXenDescriptor())).toString("base64");
      const [first, second] = await Promise.allSettled([
        agentRequest(at, secret, "clone", { ...order(descriptor), cloneIds: [3, 4, 5] }),
        Bun.sleep(50).then(() => agentRequest(at, secret, "clone", { ...order(descriptor), cloneIds: [6, 7] })),
      ]);
      expect(first.status).toBe("fulfilled");
      expect(second.status).toBe("rejected");
      expect((second as PromiseRejectedResult).reason.message).toContain(
        "host x1 runs 0 clone(s) and starts 3; 2 more would pass its limit of 4",
      );
      expect(asked.map((r) => r.cloneIds)).toEqual([[3, 4, 5]]);
      // Once the first order's clones run, the room they left is there for the next (this one with memory on demand:
      // the backend gets the mode and the frames a clone needs before it runs).
      const onDemand = { ...order(descriptor), cloneIds: [6], domainMemory: "ondemand" };
      expect(((await agentRequest(at, secret, "clone", onDemand)) as CloneOrderResult).failed).toEqual([]);
      expect(asked.at(-1)?.memory).toBe("ondemand");
      expect([...asked.at(-1)!.snapshot.pages.keys()]).toEqual([...sampleXenDescriptor().pages.keys()]);
    } finally {
      dom0.stop();
    }
  });

  test("a KVM descriptor is refused, and a failed start is reported for each clone, in one line", async () => {
    const { domains } = standIn();
    const dom0 = start(domains);
    const failing = start(standIn("no memory for 2 clones").domains);
    try {
      const at = { host: "x1", address: "127.0.0.1", port: dom0.port };
      const kvm = Buffer.from(encodeDescriptor(sampleDescriptor())).toString("base64");
      const { parentDomain: _, ...withoutDomain } = order(Buffer.from(encodeDescriptor(sampleXenDescriptor())).toString("base64"));
      await expect(agentRequest(at, secret, "clone", withoutDomain)).rejects.toThrow(
        "a clone order for xen domains names the parent's domid",
      );
      await expect(agentRequest(at, secret, "clone", { ...withoutDomain, parentDomain: -1 })).rejects.toThrow(
        "bad clone order: parentDomain must be a domid",
      );
      await expect(agentRequest(at, secret, "clone", { ...withoutDomain, domainMemory: "ondemand" })).rejects.toThrow(
        "bad clone order: domainMemory is for a domain parent (parentDomain)",
      );
      await expect(agentRequest(at, secret, "clone", { ...withoutDomain, parentDomain: 7, domainMemory: "lazy" })).rejects.toThrow(
        "bad clone order: domainMemory must be eager or ondemand",
      );
      await expect(agentRequest(at, secret, "clone", order(kvm))).rejects.toThrow("host x1 runs xen domains, not kvm machines");
      const descriptor = Buffer.from(encodeDescriptor(sampleXenDescriptor())).toString("base64");
      const result = (await agentRequest({ ...at, port: failing.port }, secret, "clone", order(descriptor))) as CloneOrderResult;
      expect(result.started).toEqual([]);
      expect(result.failed.map((f) => [f.cloneId, f.error])).toEqual([
        [3, "no memory for 2 clones"],
        [4, "no memory for 2 clones"],
      ]);
    } finally {
      dom0.stop();
      failing.stop();
    }
  });

  test("family events: checked, then handed to the dom0's guests; an agent without guests refuses them", async () => {
    const heard: FamilyEvent[] = [];
    const dom0 = start(standIn().domains, 4, async (event) => {
      heard.push(event);
      return { found: true };
    });
    const bare = start(standIn().domains);
    try {
      const at = { host: "x1", address: "127.0.0.1", port: dom0.port };
      const ended = { event: "ended", parentDomain: 7, cloneId: 3, status: 0, result: "abc" };
      expect(await agentRequest(at, secret, "family", ended)).toEqual({ found: true });
      expect(heard).toEqual([ended as FamilyEvent]);
      for (const [bad, problem] of [
        [{ ...ended, cloneId: 0 }, "cloneId must be a clone's"],
        [{ ...ended, result: "a b" }, "bad result"],
        [{ event: "message", parentHost: "h1", parentDomain: 7, to: 0, from: 1, message: "" }, "bad message"],
        [{ event: "reboot", parentDomain: 7 }, "event must be ended, kill, end-family or message"],
      ] as const)
        await expect(agentRequest(at, secret, "family", bad)).rejects.toThrow(`bad family event: ${problem}`);
      expect(heard).toHaveLength(1);
      await expect(agentRequest({ ...at, port: bare.port }, secret, "family", ended)).rejects.toThrow("host x1 runs no domUs' families");
    } finally {
      dom0.stop();
      bare.stop();
    }
  });
});
