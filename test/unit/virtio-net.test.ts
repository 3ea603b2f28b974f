/**
 * The virtio network device, driven as Linux's virtio_net drives it: two queues in guest memory,
 * frames the driver transmits written to the device's file (a plain file here, standing in for
 * the tap), frames received put into the driver's buffers with their header, and what a hostile
 * guest can do to either queue. A real tap on a real bridge: test/integration/linux-net.test.ts.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { VirtioMmio, VIRTIO_MMIO_STATE_BYTES } from "../../src/backend/kvm/virtio/mmio.ts";
import { NET_HEADER_BYTES, RECEIVE_QUEUE, TRANSMIT_QUEUE, VirtioNet } from "../../src/backend/kvm/virtio/net.ts";
import { decodeVirtioSection, encodeVirtioSection } from "../../src/backend/kvm/virtio/persist.ts";
import { GuestMemory } from "../../src/guest-memory/guest-memory.ts";
import { formatMac, parseMac, randomMac } from "../../src/net/mac.ts";
import { badBridgeName } from "../../src/net/tap.ts";

const memory = GuestMemory.create(4 * 2 ** 20, "virtio-net-test");
const dir = mkdtempSync(join(tmpdir(), "snowflock-virtio-net-"));
afterAll(() => {
  memory.close();
  rmSync(dir, { recursive: true });
});
const view = new DataView(memory.bytes.buffer, memory.bytes.byteOffset);
const SIZE = 8;
/** Each queue's rings, 16 KiB apart; buffers from 0x40000. */
const rings = (queue: number) => ({ desc: 0x10000 + queue * 0x4000, avail: 0x11000 + queue * 0x4000, used: 0x12000 + queue * 0x4000 });
const BUFFERS = 0x40000;
const MAC = new Uint8Array([0x02, 0x53, 0x46, 0x00, 0x00, 0x01]);

interface Driver {
  mmio: VirtioMmio;
  net: VirtioNet;
  wire: string;
  levels: boolean[];
  errors: string[];
  published: number[];
}

function device(wireFlags = "w+"): Driver {
  const wire = join(dir, `wire-${Math.random().toString(16).slice(2)}`);
  if (wireFlags === "r") writeFileSync(wire, "");
  const net = new VirtioNet(memory, openSync(wire, wireFlags), MAC);
  const levels: boolean[] = [];
  const errors: string[] = [];
  const mmio = new VirtioMmio(
    net,
    (level) => levels.push(level),
    (message) => errors.push(message),
  );
  memory.bytes.fill(0, 0x10000, 0x60000);
  mmio.write(0x70, 4, 0x1 | 0x2);
  mmio.write(0x24, 4, 1);
  mmio.write(0x20, 4, 1); // VERSION_1
  mmio.write(0x70, 4, 0x1 | 0x2 | 0x8);
  for (const queue of [RECEIVE_QUEUE, TRANSMIT_QUEUE]) {
    const r = rings(queue);
    mmio.write(0x30, 4, queue);
    mmio.write(0x38, 4, SIZE);
    mmio.write(0x80, 4, r.desc);
    mmio.write(0x90, 4, r.avail);
    mmio.write(0xa0, 4, r.used);
    mmio.write(0x44, 4, 1);
  }
  mmio.write(0x70, 4, 0xf);
  return { mmio, net, wire, levels, errors, published: [0, 0] };
}

function descriptor(queue: number, index: number, address: number, length: number, flags: number, next = 0) {
  const at = rings(queue).desc + 16 * index;
  view.setBigUint64(at, BigInt(address), true);
  view.setUint32(at + 8, length, true);
  view.setUint16(at + 12, flags, true);
  view.setUint16(at + 14, next, true);
}

function publish(d: Driver, queue: number, head: number) {
  const r = rings(queue);
  view.setUint16(r.avail + 4 + 2 * (d.published[queue]! % SIZE), head, true);
  d.published[queue]!++;
  view.setUint16(r.avail + 2, d.published[queue]!, true);
}

function used(queue: number): { index: number; entries: Array<{ head: number; length: number }> } {
  const r = rings(queue);
  const index = view.getUint16(r.used + 2, true);
  return {
    index,
    entries: Array.from({ length: index }, (_, i) => ({
      head: view.getUint32(r.used + 4 + 8 * (i % SIZE), true),
      length: view.getUint32(r.used + 8 + 8 * (i % SIZE), true),
    })),
  };
}

const frame = (length: number, fill: number) => Uint8Array.from({ length }, (_, i) => (i + fill) & 0xff);

/** A frame put to the receive queue as the receive thread does it. */
const deliver = (d: Driver, bytes: Uint8Array) =>
  d.mmio.useQueue(RECEIVE_QUEUE, (layout, nextAvail) => d.net.receive(layout, nextAvail, bytes));

describe("virtio-mmio network device", () => {
  test("offers version 1, MAC and link status; its config space holds the VM's MAC, the link up", () => {
    const d = device();
    expect(d.mmio.read(8, 4)).toBe(1);
    d.mmio.write(0x14, 4, 0);
    expect(d.mmio.read(0x10, 4)).toBe((1 << 5) | (1 << 16));
    expect(Array.from({ length: 6 }, (_, i) => d.mmio.read(0x100 + i, 1))).toEqual([...MAC]);
    expect(d.mmio.read(0x106, 2)).toBe(1);
  });

  test("a transmitted chain (header and frame split over two buffers) reaches the wire without its header", () => {
    const d = device();
    const sent = frame(60, 1);
    memory.bytes.set(new Uint8Array(NET_HEADER_BYTES), BUFFERS);
    memory.bytes.set(sent, BUFFERS + 0x1000);
    descriptor(TRANSMIT_QUEUE, 0, BUFFERS, NET_HEADER_BYTES, 1, 1);
    descriptor(TRANSMIT_QUEUE, 1, BUFFERS + 0x1000, sent.byteLength, 0);
    publish(d, TRANSMIT_QUEUE, 0);
    d.mmio.write(0x50, 4, TRANSMIT_QUEUE);
    expect(new Uint8Array(readFileSync(d.wire))).toEqual(sent);
    expect(used(TRANSMIT_QUEUE).entries).toEqual([{ head: 0, length: 0 }]);
    expect(d.levels).toEqual([true]);
  });

  test("a frame the tap does not take (here a descriptor it cannot write: EBADF) is dropped; the chain goes back used, the device serves on", () => {
    const d = device("r");
    memory.bytes.set(frame(72, 3), BUFFERS);
    descriptor(TRANSMIT_QUEUE, 0, BUFFERS, 72, 0);
    publish(d, TRANSMIT_QUEUE, 0);
    d.mmio.write(0x50, 4, TRANSMIT_QUEUE);
    expect(d.net.dropped).toBe(1);
    expect(used(TRANSMIT_QUEUE).entries).toEqual([{ head: 0, length: 0 }]);
    expect(d.errors).toEqual([]);
    expect(d.mmio.read(0x70, 4) & 0x40).toBe(0);
  });

  test("a received frame fills the next receive buffer with a header (num_buffers 1) and the frame; with none left it is dropped", () => {
    const d = device();
    descriptor(RECEIVE_QUEUE, 0, BUFFERS, 1526, 2);
    publish(d, RECEIVE_QUEUE, 0);
    // Notifying the receive queue takes nothing: its buffers wait for frames.
    d.mmio.write(0x50, 4, RECEIVE_QUEUE);
    expect(used(RECEIVE_QUEUE).index).toBe(0);
    const got = frame(98, 7);
    expect(deliver(d, got)).toBe(true);
    expect(used(RECEIVE_QUEUE).entries).toEqual([{ head: 0, length: NET_HEADER_BYTES + 98 }]);
    expect(view.getUint16(BUFFERS + 10, true)).toBe(1);
    expect(memory.bytes.subarray(BUFFERS + NET_HEADER_BYTES, BUFFERS + NET_HEADER_BYTES + 98)).toEqual(got);
    expect(d.levels).toEqual([true]);
    deliver(d, got);
    expect(used(RECEIVE_QUEUE).index).toBe(1);
    expect(d.net.dropped).toBe(1);
  });

  test("a receive buffer too small is given back empty; a read-only one, or a writable transmit one, makes the device need a reset", () => {
    const d = device();
    descriptor(RECEIVE_QUEUE, 0, BUFFERS, 40, 2);
    publish(d, RECEIVE_QUEUE, 0);
    deliver(d, frame(100, 0));
    expect(used(RECEIVE_QUEUE).entries).toEqual([{ head: 0, length: 0 }]);
    descriptor(RECEIVE_QUEUE, 1, BUFFERS, 1526, 0);
    publish(d, RECEIVE_QUEUE, 1);
    deliver(d, frame(100, 0));
    expect(d.errors).toEqual(["virtio device 1, queue 0: a receive buffer the device may not write"]);
    expect(d.mmio.read(0x70, 4) & 0x40).toBe(0x40);

    const t = device();
    descriptor(TRANSMIT_QUEUE, 0, BUFFERS, 100, 2);
    publish(t, TRANSMIT_QUEUE, 0);
    t.mmio.write(0x50, 4, TRANSMIT_QUEUE);
    expect(t.errors).toEqual(["virtio device 1, queue 1: a transmit chain with a writable buffer"]);
    expect(readFileSync(t.wire).byteLength).toBe(0);
  });
});

describe("network devices in a descriptor", () => {
  const state = new Uint8Array(VIRTIO_MMIO_STATE_BYTES);

  test("round trip of the bridge and MAC; a bad bridge or MAC is refused", () => {
    const net = { kind: "net" as const, bridge: "snowflock0", mac: "02:53:46:00:00:01", state };
    expect(decodeVirtioSection(encodeVirtioSection([net]))).toEqual([net]);
    const forged = (fields: object) =>
      new TextEncoder().encode(JSON.stringify([{ kind: "net", bridge: "br0", mac: "02:00:00:00:00:01", state: "", ...fields }]));
    const base64 = Buffer.from(state).toString("base64");
    expect(() => decodeVirtioSection(forged({ state: base64, bridge: "a-bridge-name-too-long" }))).toThrow(/names no usable bridge/);
    expect(() => decodeVirtioSection(forged({ state: base64, bridge: "br0;rm" }))).toThrow(/names no usable bridge/);
    expect(() => decodeVirtioSection(forged({ state: base64, mac: "02:00:00:00:01" }))).toThrow(/has no MAC/);
  });

  test("MACs: random ones are unicast and locally administered, and distinct; text round trip", () => {
    const macs = Array.from({ length: 64 }, () => randomMac());
    for (const mac of macs) expect(mac[0]! & 0x03).toBe(0x02);
    expect(new Set(macs.map(formatMac)).size).toBe(64);
    expect(parseMac(formatMac(MAC))).toEqual(MAC);
    expect(parseMac("zz:00:00:00:00:00")).toBeUndefined();
    expect(badBridgeName("snowflock0")).toBeUndefined();
    expect(badBridgeName("")).toContain("1 to 15");
  });
});
