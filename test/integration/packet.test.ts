/**
 * mcdist frames over real Ethernet: an AF_PACKET socket in one network namespace sends to one in
 * another over a veth pair; the receiver reassembles the page and drops what is not for it. A
 * packet transport whose ring is full counts the frames the kernel dropped, and one can take a
 * socket and ring made ahead.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import { TEST_PAGE } from "../support/packet-page.ts";
import { ETHERTYPE_MCDIST } from "../../src/mcdist/frame.ts";
import { groupMac, openTransport, preparePacketRing } from "../../src/mcdist/transport.ts";
import { POLLIN } from "../../src/sys/constants.ts";
import { close } from "../../src/sys/files.ts";
import { pollRetrying } from "../../src/sys/poll-retrying.ts";
import { openPacketSocket, sendFrame } from "../../src/sys/packet.ts";

const PEER = join(import.meta.dir, "../support/packet-peer.ts");
const prefix = `sfpk${process.pid % 10000}`;
const [a, b] = [`${prefix}a`, `${prefix}b`];

function ip(...args: string[]): { ok: boolean; err: string } {
  const r = Bun.spawnSync(["ip", ...args], { stderr: "pipe" });
  return { ok: r.exitCode === 0, err: r.stderr.toString() };
}

const canNetns = process.getuid?.() === 0 && ip("netns", "list").ok;
const required = process.env.SNOWFLOCK_REQUIRE_KVM === "1";
if (!canNetns && !required) console.warn("skipping AF_PACKET tests: they need root and `ip netns`");

describe.skipIf(!canNetns && !required)("AF_PACKET frames between network namespaces", () => {
  beforeAll(() => {
    expect(canNetns).toBe(true);
    for (const step of [
      ["netns", "add", a],
      ["netns", "add", b],
      ["link", "add", `${prefix}x`, "netns", a, "type", "veth", "peer", "name", `${prefix}y`, "netns", b],
      ["-n", a, "link", "set", `${prefix}x`, "up"],
      ["-n", b, "link", "set", `${prefix}y`, "up"],
    ]) {
      const r = ip(...step);
      if (!r.ok) throw new Error(`ip ${step.join(" ")}: ${r.err}`);
    }
  });
  afterAll(() => {
    ip("netns", "del", a);
    ip("netns", "del", b);
  });

  test("a fragmented page arrives whole; other families, corrupted frames and garbage are dropped", async () => {
    const receiver = Bun.spawn(["ip", "netns", "exec", b, process.execPath, PEER, "recv", `${prefix}y`, "42", "6"], {
      stdout: "pipe",
      stderr: "pipe",
    });
    const reader = receiver.stdout.getReader();
    const decoder = new TextDecoder();
    let text = "";
    while (!text.includes("ready")) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`receiver ended: ${await new Response(receiver.stderr).text()}`);
      text += decoder.decode(value);
    }
    const sender = Bun.spawnSync(["ip", "netns", "exec", a, process.execPath, PEER, "send", `${prefix}x`, "42"], { stderr: "pipe" });
    expect(sender.stderr.toString()).toBe("");
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += decoder.decode(value);
    }
    const lines = text
      .trim()
      .split("\n")
      .slice(1)
      .map((l) => JSON.parse(l));
    const fragments = lines.filter((l) => l.object === "77").sort((x, y) => x.fragment - y.fragment);
    expect(fragments.map((f) => f.fragment)).toEqual([0, 1, 2]);
    const page = Buffer.concat(fragments.map((f) => Buffer.from(f.payload, "base64")));
    expect(new Uint8Array(page)).toEqual(TEST_PAGE);
    expect(
      lines
        .filter((l) => l.dropped)
        .map((l) => l.dropped)
        .sort(),
    ).toEqual(["checksum", "family", "magic"]);
  });
});

const canRaw = process.getuid?.() === 0;
if (!canRaw && !required) console.warn("skipping the packet transport's drop count: AF_PACKET sockets need root");

describe.skipIf(!canRaw && !required)("a packet transport's frames dropped by the kernel", () => {
  test("a full receive ring drops frames, and framesDropped() tells how many since it was last asked", () => {
    expect(canRaw).toBe(true);
    const family = 0x5d00 + (process.pid % 256);
    // On the loopback interface: a ring of one block (16 slots at lo's MTU) that is never read.
    const receiver = openTransport({ kind: "packet", interface: "lo" }, { family, mtu: 1500, bufferBytes: 64 * 1024 });
    const sender = openPacketSocket("lo", ETHERTYPE_MCDIST);
    try {
      expect(receiver.framesDropped()).toBe(0);
      const sent = 100;
      for (let i = 0; i < sent; i++) sendFrame(sender, groupMac(family), new Uint8Array(64).fill(i));
      const dropped = receiver.framesDropped()!;
      expect(dropped).toBeGreaterThan(0);
      expect(dropped).toBeLessThan(sent);
      expect(receiver.framesDropped()).toBe(0);
    } finally {
      close(sender.fd);
      receiver.close();
    }
  });
});

describe.skipIf(!canNetns && !required)("a packet socket and ring made ahead", () => {
  const socketInode = (fd: number) => readlinkSync(`/proc/self/fd/${fd}`);
  // A veth pair in this namespace: on lo every frame's source is this host's own address, which a transport drops.
  const [near, far] = [`${prefix}p`, `${prefix}q`];
  beforeAll(() => {
    expect(canNetns).toBe(true);
    for (const step of [
      ["link", "add", near, "type", "veth", "peer", "name", far],
      ["link", "set", near, "up"],
      ["link", "set", far, "up"],
    ]) {
      const r = ip(...step);
      if (!r.ok) throw new Error(`ip ${step.join(" ")}: ${r.err}`);
    }
  });
  afterAll(() => void ip("link", "del", near));

  test("receive nothing until a transport takes them, then the family's frames; one that does not fit them closes them", () => {
    expect(canRaw).toBe(true);
    const family = 0x5e00 + (process.pid % 256);
    const sender = openPacketSocket(near, ETHERTYPE_MCDIST);
    const prepared = preparePacketRing(far, 64 * 1024);
    // Plain numbers: posted to memtap's Worker with the clone's plan, views of the ring would be copied whole.
    expect(Object.values(prepared.ring).every((value) => typeof value === "number")).toBe(true);
    try {
      // Unbound, the prepared socket hears nothing: these frames never reach its ring.
      for (let i = 0; i < 3; i++) sendFrame(sender, groupMac(family), new Uint8Array(64).fill(0xee));
      const transport = openTransport({ kind: "packet", interface: far }, { family, mtu: 1500, prepared });
      try {
        expect(transport.fd).toBe(prepared.fd);
        const payload = new Uint8Array(64).fill(7);
        sendFrame(sender, groupMac(family), payload);
        const buffer = new Uint8Array(2048);
        const [readable = 0] = pollRetrying([{ fd: transport.fd, events: POLLIN }], 2000);
        expect(readable).not.toBe(0);
        const length = transport.receive(buffer);
        expect(length).toBe(64);
        expect(buffer.subarray(0, 64)).toEqual(payload);
        expect(transport.receive(buffer)).toBeUndefined();
      } finally {
        transport.close();
      }
    } finally {
      close(sender.fd);
    }

    // A transport without a ring (or on another interface) closes the prepared socket and opens its own.
    const unused = preparePacketRing(far, 64 * 1024);
    const inode = socketInode(unused.fd);
    const frameByFrame = openTransport({ kind: "packet", interface: far }, { family, mtu: 1500, ring: false, prepared: unused });
    try {
      expect(existsSync(`/proc/self/fd/${unused.fd}`) && socketInode(unused.fd) === inode).toBe(false);
    } finally {
      frameByFrame.close();
    }
  });
});
