/** The agent's control plane refuses anything not signed with the cluster's secret, and replays. */
import { afterAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { agentRequest } from "../../src/cluster/agent-client.ts";
import { MAX_MESSAGE_BYTES, signRequest } from "../../src/cluster/agent-protocol.ts";
import { startAgent } from "../../src/cluster/agent.ts";
import { ClusterContext } from "../../src/cluster/cluster-context.ts";
import { testRunDir } from "../support/cli.ts";

process.env.SNOWFLOCK_RUN_DIR = testRunDir();
const secret = randomBytes(32).toString("hex");
const host = { name: "h1", namespace: null, address: "127.0.0.1", interface: "lo", mac: "02:73:66:00:00:01", agentPort: 0 };
const inventory = { version: 1 as const, cluster: "unit", secret, bridge: null, mtu: 1500, hosts: [host] };
const agent = startAgent({ cluster: new ClusterContext("(in memory)", inventory, host, new Map()), maxClones: 4 });
const target = { host: "h1", address: "127.0.0.1", port: agent.port };
afterAll(() => agent.stop());

/** Sends raw lines and returns the first answer line. */
async function raw(...lines: string[]): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let buffer = "";
    let pending = new Uint8Array(0);
    Bun.connect({
      hostname: "127.0.0.1",
      port: agent.port,
      socket: {
        open(s) {
          pending = new TextEncoder().encode(lines.map((l) => `${l}\n`).join(""));
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
    const answer = await raw(JSON.stringify({ v: 1, op: "hello", host: "h1", ts: Date.now(), nonce: "00".repeat(16), body: null }));
    expect(answer).toEqual({ ok: false, error: "unauthenticated: the request is not signed with this cluster's secret" });
  });

  test("another cluster's secret, a tampered body, another host, a stale or replayed request", async () => {
    await expect(agentRequest(target, randomBytes(32).toString("hex"), "hello")).rejects.toThrow("not signed with this cluster's secret");
    const tampered = signRequest(secret, "h1", "hello", { a: 1 });
    expect((await raw(JSON.stringify({ ...tampered, body: { a: 2 } }))).error).toContain("not signed");
    expect((await raw(JSON.stringify(signRequest(secret, "h2", "hello", null)))).error).toContain("for host h2");
    expect((await raw(JSON.stringify(signRequest(secret, "h1", "hello", null, Date.now() - 5 * 60_000)))).error).toContain("too old");
    const once = JSON.stringify(signRequest(secret, "h1", "hello", null));
    expect((await raw(once)).ok).toBe(true);
    expect((await raw(once)).error).toContain("replay");
  });

  test("garbage and oversized input are refused", async () => {
    expect((await raw("not json")).error).toContain("unauthenticated");
    expect((await raw("x".repeat(MAX_MESSAGE_BYTES + 1))).error).toContain("too large");
    expect(agent.stats().refused).toBeGreaterThan(5);
    // The agent still serves good requests.
    expect(await agentRequest(target, secret, "hello")).toMatchObject({ host: "h1" });
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
