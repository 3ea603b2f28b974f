/**
 * The virtio-mmio transport and the block device, driven as Linux's drivers drive them: feature
 * negotiation, a queue in guest memory, requests that read and write a real image file, and the
 * broken chains and out-of-range requests a hostile guest can make.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { VirtioBlock } from "../../src/backend/kvm/virtio/block.ts";
import { QUEUE_SIZE, VIRTIO_MMIO_STATE_BYTES, VirtioMmio } from "../../src/backend/kvm/virtio/mmio.ts";
import { decodeVirtioSection, encodeVirtioSection } from "../../src/backend/kvm/virtio/persist.ts";
import { GuestMemory } from "../../src/guest-memory/guest-memory.ts";

const memory = GuestMemory.create(4 * 2 ** 20, "virtio-test");
afterAll(() => memory.close());
const dir = mkdtempSync(join(tmpdir(), "snowflock-virtio-"));
const DISK_BYTES = 64 * 1024;
const QUEUE = { desc: 0x10000, avail: 0x11000, used: 0x12000, size: 8 };
const HEADER = 0x20000;
const DATA = 0x21000;
const STATUS = 0x22000;

interface Driver {
  mmio: VirtioMmio;
  levels: boolean[];
  errors: string[];
  path: string;
  published: number;
}

function device(readOnly = false): Driver {
  const path = join(dir, `disk-${Math.random().toString(16).slice(2)}.img`);
  writeFileSync(
    path,
    Uint8Array.from({ length: DISK_BYTES }, (_, i) => (i >> 9) & 0xff),
  );
  const fd = openSync(path, readOnly ? "r" : "r+");
  const levels: boolean[] = [];
  const errors: string[] = [];
  const block = new VirtioBlock(memory, { fd, bytes: DISK_BYTES, readOnly, serial: "sfdisk0" });
  const mmio = new VirtioMmio(
    block,
    (level) => levels.push(level),
    (message) => errors.push(message),
  );
  memory.bytes.fill(0, QUEUE.desc, QUEUE.used + 0x1000);
  return { mmio, levels, errors, path, published: 0 };
}

/** Linux's virtio_mmio probe and virtio_blk's queue setup. */
function initialize(d: Driver): bigint {
  const { mmio } = d;
  expect([mmio.read(0, 4), mmio.read(4, 4), mmio.read(8, 4)]).toEqual([0x74726976, 2, 2]);
  mmio.write(0x70, 4, 0x1 | 0x2); // ACKNOWLEDGE | DRIVER
  mmio.write(0x14, 4, 0);
  const low = BigInt(mmio.read(0x10, 4));
  mmio.write(0x14, 4, 1);
  const features = (BigInt(mmio.read(0x10, 4)) << 32n) | low;
  mmio.write(0x24, 4, 0);
  mmio.write(0x20, 4, Number(features & 0xffffffffn));
  mmio.write(0x24, 4, 1);
  mmio.write(0x20, 4, Number(features >> 32n));
  mmio.write(0x70, 4, 0x1 | 0x2 | 0x8); // FEATURES_OK
  mmio.write(0x30, 4, 0);
  expect(mmio.read(0x34, 4)).toBe(QUEUE_SIZE);
  mmio.write(0x38, 4, QUEUE.size);
  mmio.write(0x80, 4, QUEUE.desc);
  mmio.write(0x84, 4, 0);
  mmio.write(0x90, 4, QUEUE.avail);
  mmio.write(0x94, 4, 0);
  mmio.write(0xa0, 4, QUEUE.used);
  mmio.write(0xa4, 4, 0);
  mmio.write(0x44, 4, 1);
  mmio.write(0x70, 4, 0x1 | 0x2 | 0x8 | 0x4); // DRIVER_OK
  return features;
}

const view = new DataView(memory.bytes.buffer, memory.bytes.byteOffset);

function descriptor(index: number, address: number, length: number, flags: number, next = 0) {
  const at = QUEUE.desc + 16 * index;
  view.setBigUint64(at, BigInt(address), true);
  view.setUint32(at + 8, length, true);
  view.setUint16(at + 12, flags, true);
  view.setUint16(at + 14, next, true);
}

/** A request in descriptors 0-2 (header, data, status), made available and notified. */
function request(d: Driver, type: number, sector: number, dataBytes: number, dataWritable: boolean) {
  view.setUint32(HEADER, type, true);
  view.setBigUint64(HEADER + 8, BigInt(sector), true);
  memory.bytes[STATUS] = 0xff;
  descriptor(0, HEADER, 16, 1, 1);
  descriptor(1, DATA, dataBytes, 1 | (dataWritable ? 2 : 0), 2);
  descriptor(2, STATUS, 1, 2);
  view.setUint16(QUEUE.avail + 4 + 2 * (d.published % QUEUE.size), 0, true);
  d.published++;
  view.setUint16(QUEUE.avail + 2, d.published, true);
  d.mmio.write(0x50, 4, 0);
  return {
    status: memory.bytes[STATUS],
    usedIndex: view.getUint16(QUEUE.used + 2, true),
    usedLength: view.getUint32(QUEUE.used + 4 + 8 * ((d.published - 1) % QUEUE.size) + 4, true),
  };
}

describe("virtio-mmio block device", () => {
  test("negotiates version 1 and flush; capacity in sectors in its config; a write then a read go to the image", () => {
    const d = device();
    const features = initialize(d);
    expect(features & (1n << 32n)).not.toBe(0n);
    expect(features & (1n << 9n)).not.toBe(0n);
    expect(features & (1n << 5n)).toBe(0n); // not read-only
    expect(d.mmio.read(0x100, 4)).toBe(DISK_BYTES / 512);

    memory.bytes.fill(0xab, DATA, DATA + 1024);
    expect(request(d, 1, 3, 1024, false)).toEqual({ status: 0, usedIndex: 1, usedLength: 1 });
    const image = readFileSync(d.path);
    expect(image.subarray(3 * 512, 5 * 512).every((b) => b === 0xab)).toBe(true);
    expect(image[2 * 512]).toBe(2);
    expect(image[5 * 512]).toBe(5);
    // The used buffer raised the level-triggered line; the driver's acknowledgement lowers it.
    expect(d.levels).toEqual([true]);
    expect(d.mmio.read(0x60, 4)).toBe(1);
    d.mmio.write(0x64, 4, 1);
    expect(d.levels).toEqual([true, false]);

    memory.bytes.fill(0, DATA, DATA + 512);
    expect(request(d, 0, 7, 512, true)).toEqual({ status: 0, usedIndex: 2, usedLength: 513 });
    expect(memory.bytes.subarray(DATA, DATA + 512).every((b) => b === 7)).toBe(true);
    expect(request(d, 8, 0, 20, true).status).toBe(0);
    expect(new TextDecoder().decode(memory.bytes.subarray(DATA, DATA + 7))).toBe("sfdisk0");
    expect(request(d, 4, 0, 0, false).status).toBe(0); // flush (an empty data buffer here)
    expect(request(d, 99, 0, 16, true).status).toBe(2); // unsupported
  });

  test("past the disk's end, or a write to a read-only disk: an I/O error status, the image untouched", () => {
    const d = device();
    initialize(d);
    expect(request(d, 0, DISK_BYTES / 512 - 1, 1024, true).status).toBe(1);
    const ro = device(true);
    const features = initialize(ro);
    expect(features & (1n << 5n)).not.toBe(0n);
    const before = readFileSync(ro.path);
    expect(request(ro, 1, 0, 512, false).status).toBe(1);
    expect(readFileSync(ro.path)).toEqual(before);
    expect(request(ro, 0, 1, 512, true).status).toBe(0);
  });

  test("a looping chain or a buffer outside guest memory: the device needs a reset, the VM goes on, the error is reported", () => {
    const d = device();
    initialize(d);
    descriptor(0, HEADER, 16, 1, 0); // points at itself
    view.setUint16(QUEUE.avail + 2, 1, true);
    d.mmio.write(0x50, 4, 0);
    expect(d.errors).toEqual(["virtio device 2, queue 0: the chain from descriptor 0 loops or is longer than the queue"]);
    expect(d.mmio.read(0x70, 4) & 0x40).toBe(0x40);
    // Until the driver resets the device it serves nothing more.
    const fresh = device();
    initialize(fresh);
    descriptor(0, 0x7fff_0000, 16, 0);
    view.setUint16(QUEUE.avail + 2, 1, true);
    fresh.mmio.write(0x50, 4, 0);
    expect(fresh.errors[0]).toContain("is outside guest memory");
    fresh.mmio.write(0x70, 4, 0); // reset
    expect(fresh.mmio.read(0x70, 4)).toBe(0);
  });

  test("capture and restore carry the negotiated queue and the device's own avail index to a fresh transport", () => {
    const d = device();
    initialize(d);
    memory.bytes.fill(0x5a, DATA, DATA + 512);
    request(d, 1, 0, 512, false);
    const state = d.mmio.capture();
    const levels: boolean[] = [];
    const block = new VirtioBlock(memory, { fd: openSync(d.path, "r+"), bytes: DISK_BYTES, readOnly: false, serial: "x" });
    const restored = new VirtioMmio(
      block,
      (level) => levels.push(level),
      () => {},
    );
    restored.restore(state);
    expect(levels).toEqual([true]); // the interrupt was pending
    expect(restored.capture()).toEqual(state);
    expect(request({ mmio: restored, levels, errors: [], path: d.path, published: d.published }, 0, 0, 512, true)).toEqual({
      status: 0,
      usedIndex: 2,
      usedLength: 513,
    });
    expect(() => restored.restore(new Uint8Array(3))).toThrow(/virtio-mmio state of 3 bytes/);
  });
});

describe("virtio devices in a descriptor", () => {
  const state = new Uint8Array(VIRTIO_MMIO_STATE_BYTES);
  const device = { kind: "block" as const, path: "/images/root.ext4", readOnly: true, state };

  test("round trip: a shared read-only image, and a writable one frozen for clones to overlay", () => {
    const frozen = { kind: "block" as const, path: "/proc/7/fd/9", readOnly: false, copyOnWrite: true, image: "/images/data.ext4", state };
    expect(decodeVirtioSection(encodeVirtioSection([device, frozen]))).toEqual([device, frozen]);
  });

  test("a writable image not frozen, odd flags, a relative path, an unknown kind, a wrong-sized state or not JSON: refused", () => {
    const forged = (entries: unknown) => () => decodeVirtioSection(new TextEncoder().encode(JSON.stringify(entries)));
    const base64 = Buffer.from(state).toString("base64");
    expect(forged([{ kind: "block", path: "/a", readOnly: false, state: base64 }])).toThrow(/writable: clones never share/);
    expect(forged([{ kind: "block", path: "/a", readOnly: false, copyOnWrite: 1, state: base64 }])).toThrow(
      /no read-only or copy-on-write flag/,
    );
    expect(forged([{ kind: "block", path: "/a", readOnly: true, copyOnWrite: true, state: base64 }])).toThrow(
      /both read-only and copy-on-write/,
    );
    expect(forged([{ kind: "block", path: "/a", readOnly: false, copyOnWrite: true, image: 5, state: base64 }])).toThrow(
      /names its image badly/,
    );
    expect(forged([{ kind: "block", path: "a.img", readOnly: true, state: base64 }])).toThrow(/no absolute image path/);
    expect(forged([{ kind: "usb", path: "/a", readOnly: true, state: base64 }])).toThrow(/unknown kind/);
    expect(forged([{ kind: "block", path: "/a", readOnly: true, state: "AAAA" }])).toThrow(/virtio-mmio state of 3 bytes/);
    expect(forged(Array.from({ length: 8 }, () => device))).toThrow(/at most 7 devices/);
    expect(() => decodeVirtioSection(new TextEncoder().encode("{"))).toThrow(/not JSON/);
  });
});
