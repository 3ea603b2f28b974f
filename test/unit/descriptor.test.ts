/** The descriptor format: round trip, and every kind of bad input refused with a clear error. */
import { describe, expect, test } from "bun:test";
import { deflateSync } from "node:zlib";
import { SnowflockError } from "../../src/errors.ts";
import * as abi from "../../src/backend/kvm/abi.ts";
import { DESCRIPTOR_VERSION, HEADER_SIZE, sealEnvelope } from "../../src/descriptor/envelope.ts";
import { decodeDescriptor, type Descriptor, encodeDescriptor } from "../../src/descriptor/format.ts";
import { decodeZeroElided } from "../../src/wasm/descriptor-codec.ts";
import { memoryLayout } from "../../src/memory/layout.ts";

const random = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 131 + seed * 7) & 0xff);

function sample(): Descriptor {
  const memorySize = 64 * 1024 * 1024;
  const vcpu = (seed: number) => ({
    regs: random(abi.kvm_regs.size, seed),
    sregs: random(abi.kvm_sregs.size, seed + 1),
    xsave: random(abi.kvm_xsave.size, seed + 2),
    xcrs: random(abi.kvm_xcrs.size, seed + 3),
    lapic: random(abi.kvm_lapic_state.size, seed + 4),
    events: random(abi.kvm_vcpu_events.size, seed + 5),
    debugregs: random(abi.kvm_debugregs.size, seed + 6),
    mpState: seed,
    msrs: [{ index: 0x10, data: 123456789n + BigInt(seed) }, { index: 0xc0000082, data: 0xffffffff81000000n }],
  });
  const nonZeroPages = new Uint8Array(memorySize / 4096 / 8);
  nonZeroPages[0] = 0b1011;
  return {
    meta: { backend: "kvm", name: "t", cmdline: "serve", memorySize, regions: memoryLayout(memorySize).regions, createdAt: "2026-11-25T00:00:00.000Z" },
    state: {
      memorySize,
      vcpus: [vcpu(1), vcpu(2)],
      devices: {
        picMaster: random(abi.kvm_irqchip.size, 9),
        picSlave: random(abi.kvm_irqchip.size, 10),
        ioapic: random(abi.kvm_irqchip.size, 11),
        pit: random(abi.kvm_pit_state2.size, 12),
        clock: random(abi.kvm_clock_data.size, 13),
      },
    },
    nonZeroPages,
    pages: new Map([[0, random(4096, 20)], [3, random(4096, 21)]]),
  };
}

function refusal(bytes: Uint8Array): string {
  try {
    decodeDescriptor(bytes);
  } catch (error) {
    expect(error).toBeInstanceOf(SnowflockError);
    expect((error as SnowflockError).code).toBe("DESCRIPTOR");
    return (error as SnowflockError).render();
  }
  throw new Error("the descriptor was accepted");
}

/** The payload of a good descriptor, to forge variants of with a valid checksum. */
function payloadOf(bytes: Uint8Array): Uint8Array {
  return decodeZeroElided(bytes.subarray(HEADER_SIZE), Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(24, true)));
}

describe("VM descriptor format", () => {
  const good = encodeDescriptor(sample());

  test("round trip keeps every field", () => {
    const { descriptor, envelope } = decodeDescriptor(good);
    expect(descriptor).toEqual(sample());
    expect(envelope.version).toBe(DESCRIPTOR_VERSION);
    expect(good.byteLength).toBeLessThan(envelope.rawBytes);
  });

  test("foreign, newer, truncated and corrupted input", () => {
    expect(refusal(new Uint8Array(5))).toContain("shorter than the 32-byte header");
    const foreign = good.slice();
    foreign.set(new TextEncoder().encode("QFI\xfb"), 0);
    expect(refusal(foreign)).toContain("wrong magic");
    const newer = good.slice();
    new DataView(newer.buffer).setUint16(8, DESCRIPTOR_VERSION + 1, true);
    expect(refusal(newer)).toContain(`format version ${DESCRIPTOR_VERSION + 1} is newer than this snowflock reads`);
    expect(refusal(good.slice(0, good.byteLength - 10))).toContain("truncated");
    expect(refusal(new Uint8Array([...good, 1, 2, 3]))).toContain("trailing garbage");
    const flipped = good.slice();
    flipped[HEADER_SIZE + 20]! ^= 0x40;
    expect(refusal(flipped)).toContain("checksum mismatch");
    const huge = good.slice();
    new DataView(huge.buffer).setBigUint64(24, 1n << 40n, true);
    expect(refusal(huge)).toContain("over the");
    const flags = good.slice();
    new DataView(flags.buffer).setUint16(10, 0x80, true);
    expect(refusal(flags)).toContain("unknown flags");
  });

  test("forged payloads with a valid checksum", () => {
    const payload = payloadOf(good);
    // A section whose length runs past the end.
    const longSection = payload.slice();
    new DataView(longSection.buffer).setUint32(4, 0xfffffff0, true);
    expect(refusal(sealEnvelope(longSection))).toContain("runs past the end");
    // A cut-off section header.
    expect(refusal(sealEnvelope(new Uint8Array([...payload, 1, 0, 0])))).toContain("cut off");
    // An unknown section type.
    const unknown = new Uint8Array([...payload, 99, 0, 0, 0, 0, 0, 0, 0]);
    expect(refusal(sealEnvelope(unknown))).toContain("unknown section type 99");
    // Metadata that is not JSON.
    const metaLength = new DataView(payload.buffer).getUint32(4, true);
    const notJson = payload.slice();
    notJson[8] = 0x7b + 1;
    expect(refusal(sealEnvelope(notJson))).toContain("metadata is not JSON");
    // Only the metadata: required sections missing.
    expect(refusal(sealEnvelope(payload.slice(0, 8 + metaLength)))).toContain("required section is missing");
  });

  test("a descriptor deflated by an earlier snowflock still opens", () => {
    const payload = payloadOf(good);
    const stored = deflateSync(payload);
    const old = new Uint8Array(HEADER_SIZE + stored.byteLength);
    old.set(good.subarray(0, HEADER_SIZE));
    const v = new DataView(old.buffer);
    v.setUint16(10, 1, true);
    v.setUint32(12, Bun.hash.crc32(stored), true);
    v.setBigUint64(16, BigInt(stored.byteLength), true);
    old.set(stored, HEADER_SIZE);
    expect(decodeDescriptor(old).descriptor).toEqual(sample());
  });

  test("a coded payload that is forged under a valid checksum is refused", () => {
    const forged = good.slice();
    forged[forged.byteLength - 1]! ^= 0xff;
    forged[forged.byteLength - 2]! ^= 0x10;
    const v = new DataView(forged.buffer);
    v.setUint32(12, Bun.hash.crc32(forged.subarray(HEADER_SIZE)), true);
    expect(refusal(forged)).toContain("payload does not decode");
  });

  test("a page outside guest memory or a wrong-sized bitmap is refused", () => {
    const far = sample();
    far.pages.set(1 << 30, random(4096, 1));
    expect(refusal(encodeDescriptor(far))).toContain("outside guest memory");
    const short = sample();
    short.nonZeroPages = new Uint8Array(3);
    expect(refusal(encodeDescriptor(short))).toContain("bitmap does not match");
    const foreignBackend = sample();
    (foreignBackend.meta as { backend: string }).backend = "xen";
    expect(refusal(encodeDescriptor(foreignBackend))).toContain("backend 'xen'");
  });
});
