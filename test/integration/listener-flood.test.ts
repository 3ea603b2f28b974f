/**
 * Issue 10 item 1: a peer without the cluster's secret (or the memory server's token) floods a real
 * agent and a real memory server, each in a process of its own, with 500 connections: slow ones
 * that trickle a byte at a time, and bulky ones that send 256 KiB before authenticating. The
 * server's RSS must stay within RSS_GROWTH_BOUND of what it was, every flooding connection must be
 * closed (by the byte limit, the connection cap or the authentication deadline), and legitimate
 * requests must be answered while the flood is on.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { agentRequest } from "../../src/cluster/agent-client.ts";
import { PAGE_SIZE } from "../../src/guest-memory/layout.ts";
import { PageClient } from "../../src/memory/page-client.ts";
import {
  decodeError,
  decodeHeader,
  encodeHello,
  encodeMessage,
  HEADER_SIZE,
  MAX_MESSAGE_SIZE,
  MessageType,
  TOKEN_BYTES,
} from "../../src/memory/page-protocol.ts";
import { type Flood, flood } from "../support/flood.ts";
import { IMAGE_PAGES, type TargetAddress } from "../support/listener-target.ts";
import { within } from "../support/time.ts";

const CONNECTIONS = 500;
/** The servers' authentication deadline is 10 s; the targets run with their timeouts scaled by this. */
const TIMEOUT_SCALE = 0.3;
const AUTH_DEADLINE_MS = 10_000 * TIMEOUT_SCALE;
/** What 500 flooding connections may add to a server's RSS (the old agent grew by gigabytes). */
const RSS_GROWTH_BOUND = 64 * 1024 * 1024;
const AGENT_MAX_CONNECTIONS = 128;
const secret = randomBytes(32).toString("hex");

interface Target {
  child: Subprocess<"ignore", "pipe", "inherit">;
  address: TargetAddress;
}

async function startTarget(kind: "agent" | "memory"): Promise<Target> {
  const child = Bun.spawn(["bun", join(import.meta.dir, "../support/listener-target.ts"), kind], {
    env: { ...process.env, SNOWFLOCK_TIMEOUT_SCALE: String(TIMEOUT_SCALE), LISTENER_TARGET_SECRET: secret },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "inherit",
  });
  const reader = child.stdout.getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`the ${kind} target exited before it listened`);
    text += new TextDecoder().decode(value);
  }
  reader.releaseLock();
  return { child, address: JSON.parse(text.slice(0, text.indexOf("\n"))) };
}

function rssBytes(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, "utf8")
    .split("\n")
    .find((l) => l.startsWith("VmRSS:"))!;
  return Number(line.split(/\s+/)[1]) * 1024;
}

/** The highest RSS seen while `during` runs, sampled every 20 ms. */
async function peakRss<T>(pid: number, during: () => Promise<T>): Promise<{ peak: number; result: T }> {
  let peak = rssBytes(pid);
  const sampler = setInterval(() => (peak = Math.max(peak, rssBytes(pid))), 20);
  try {
    const result = await during();
    return { peak: Math.max(peak, rssBytes(pid)), result };
  } finally {
    clearInterval(sampler);
  }
}

async function allClosed(attack: Flood, limitMs: number): Promise<void> {
  const deadline = performance.now() + limitMs;
  while (attack.open() > 0 && performance.now() < deadline) await Bun.sleep(50);
}

/** Why the server closed each peer, by the first line (agent) it sent; "" for none. */
function agentReasons(attack: Flood): Map<string, number> {
  const counts = new Map<string, number>();
  for (const peer of attack.peers) {
    const text = peer.received.toString();
    const reason = text.includes("\n") ? String((JSON.parse(text.slice(0, text.indexOf("\n"))) as { error?: unknown }).error) : "";
    counts.set(reason, (counts.get(reason) ?? 0) + 1);
  }
  return counts;
}

/** Why the server closed each peer, by the Error message (memory server) it sent; "" for none. */
function memoryReasons(attack: Flood): Map<string, number> {
  const counts = new Map<string, number>();
  for (const peer of attack.peers) {
    let reason = "";
    if (peer.received.byteLength >= HEADER_SIZE) {
      const header = decodeHeader(peer.received);
      const payload = peer.received.subarray(HEADER_SIZE, HEADER_SIZE + header.length);
      reason = header.type === MessageType.Error ? decodeError(payload).text : MessageType[header.type]!;
    }
    counts.set(reason, (counts.get(reason) ?? 0) + 1);
  }
  return counts;
}

describe("an agent flooded by 500 connections without the secret", () => {
  let target: Target;
  const attacker = () => ({ port: target.address.port, count: CONNECTIONS, tickMs: 200 });
  const hello = () => agentRequest({ host: "h1", address: "127.0.0.1", port: target.address.port }, secret, "hello");
  beforeAll(async () => {
    target = await startTarget("agent");
  });
  afterAll(() => target.child.kill());

  test("slow connections stay within the cap and RSS bound, closed by the deadline; signed requests answered meanwhile", async () => {
    const before = rssBytes(target.child.pid);
    const started = performance.now();
    const { peak, result: attack } = await peakRss(target.child.pid, async () => {
      const attack = await flood({ ...attacker(), burst: Buffer.from("x".repeat(512)), slow: Buffer.from("x".repeat(400)) });
      try {
        for (let i = 0; i < 5; i++) expect(await hello()).toMatchObject({ host: "h1" });
        // The flood was still on while they were answered.
        expect(attack.open()).toBeGreaterThan(0);
        await Bun.sleep(200);
        expect(attack.open()).toBeLessThanOrEqual(AGENT_MAX_CONNECTIONS);
        await allClosed(attack, within(AUTH_DEADLINE_MS) + 5000);
      } finally {
        attack.stop();
      }
      return attack;
    });
    const reasons = agentReasons(attack);
    const tookMs = Math.round(performance.now() - started);
    console.log(`agent, slow flood: RSS ${before >> 20} MiB -> peak ${peak >> 20} MiB; closed in ${tookMs} ms:`, reasons);
    expect(attack.open()).toBe(0);
    expect(peak - before).toBeLessThan(RSS_GROWTH_BOUND);
    // Over the cap the longest-silent connection made room; the rest ran out of time to authenticate.
    expect(reasons.get("too many connections") ?? 0).toBeGreaterThanOrEqual(CONNECTIONS - AGENT_MAX_CONNECTIONS);
    expect(reasons.get("no authenticated request in time") ?? 0).toBeGreaterThan(0);
    expect((reasons.get("too many connections") ?? 0) + (reasons.get("no authenticated request in time") ?? 0)).toBe(CONNECTIONS);
  }, 60_000);

  test("connections sending 256 KiB before authenticating are cut off after one header line's bytes", async () => {
    const before = rssBytes(target.child.pid);
    const { peak, result: attack } = await peakRss(target.child.pid, async () => {
      const attacking = flood({ ...attacker(), burst: Buffer.alloc(256 * 1024, "x"), slow: Buffer.alloc(0) });
      expect(await hello()).toMatchObject({ host: "h1" });
      const attack = await attacking;
      try {
        expect(await hello()).toMatchObject({ host: "h1" });
        await allClosed(attack, within(AUTH_DEADLINE_MS) + 5000);
      } finally {
        attack.stop();
      }
      return attack;
    });
    const reasons = agentReasons(attack);
    console.log(`agent, bulk flood: RSS ${before >> 20} MiB -> peak ${peak >> 20} MiB:`, reasons);
    expect(attack.open()).toBe(0);
    expect(peak - before).toBeLessThan(RSS_GROWTH_BOUND);
    expect(reasons.get("request too large") ?? 0).toBeGreaterThan(0);
  }, 60_000);
});

describe("a memory server flooded by 500 connections without the token", () => {
  let target: Target;
  const attacker = () => ({ port: target.address.port, count: CONNECTIONS, tickMs: 200 });
  /** A clone's request for three pages, over TCP with the token: each page holds its number. */
  const fetchPages = () => {
    const client = PageClient.connect(
      { kind: "tcp", address: "127.0.0.1", port: target.address.port, token: new Uint8Array(Buffer.from(target.address.token!, "hex")) },
      { timeoutMs: within(5000), wakeFd: -1, pageCount: IMAGE_PAGES },
    );
    try {
      return client.fetch([0, 5, 63]).map((page) => (page.every((b) => b === page[0]) && page.byteLength === PAGE_SIZE ? page[0] : -1));
    } finally {
      client.close();
    }
  };
  beforeAll(async () => {
    target = await startTarget("memory");
  });
  afterAll(() => target.child.kill());

  test("slow Hellos stay within the RSS bound, are closed by the deadline, and a clone's pages are served meanwhile", async () => {
    const forged = encodeMessage(MessageType.Hello, 1, encodeHello(1, new Uint8Array(TOKEN_BYTES)));
    const before = rssBytes(target.child.pid);
    const { peak, result: attack } = await peakRss(target.child.pid, async () => {
      // 50 more bytes at 5 a second: the whole Hello would take 10 s, past the 3 s deadline.
      const attack = await flood({ ...attacker(), burst: forged.subarray(0, 10), slow: forged.subarray(10) });
      try {
        for (let i = 0; i < 5; i++) expect(fetchPages()).toEqual([0, 5, 63]);
        expect(attack.open()).toBeGreaterThan(0);
        await allClosed(attack, within(AUTH_DEADLINE_MS) + 5000);
      } finally {
        attack.stop();
      }
      return attack;
    });
    const reasons = memoryReasons(attack);
    console.log(`memory server, slow flood: RSS ${before >> 20} MiB -> peak ${peak >> 20} MiB:`, reasons);
    expect(attack.open()).toBe(0);
    expect(peak - before).toBeLessThan(RSS_GROWTH_BOUND);
    expect(reasons.get("no authenticated request in time")).toBe(CONNECTIONS);
  }, 60_000);

  test("a header announcing a 256 KiB message before Hello is refused at the header", async () => {
    const big = MAX_MESSAGE_SIZE - HEADER_SIZE;
    const header = new Uint8Array(encodeMessage(MessageType.PageData, 1, new Uint8Array(big)).subarray(0, HEADER_SIZE));
    // All but the last byte: the old server held each one, waiting for it.
    const burst = Buffer.concat([header, Buffer.alloc(big - 1)]);
    const before = rssBytes(target.child.pid);
    const { peak, result: attack } = await peakRss(target.child.pid, async () => {
      const attack = await flood({ ...attacker(), burst, slow: Buffer.alloc(0) });
      try {
        expect(fetchPages()).toEqual([0, 5, 63]);
        await allClosed(attack, within(AUTH_DEADLINE_MS) + 5000);
      } finally {
        attack.stop();
      }
      return attack;
    });
    const reasons = memoryReasons(attack);
    console.log(`memory server, bulk flood: RSS ${before >> 20} MiB -> peak ${peak >> 20} MiB:`, reasons);
    expect(attack.open()).toBe(0);
    expect(peak - before).toBeLessThan(RSS_GROWTH_BOUND);
    expect(reasons.get("request too large")).toBe(CONNECTIONS);
  }, 60_000);
});
