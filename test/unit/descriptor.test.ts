/** The descriptor format: round trip, and every kind of bad input refused with a clear error. */
import { describe, expect, test } from "bun:test";
import { deflateSync } from "node:zlib";
import { DESCRIPTOR_VERSION, HEADER_SIZE, openEnvelope, sealEnvelope } from "../../src/descriptor/envelope.ts";
import { SectionWriter, walkSections } from "../../src/sections.ts";
import { decodeDescriptor, encodeDescriptor } from "../../src/descriptor/format.ts";
import { decodeZeroElided } from "../../src/wasm/descriptor-codec.ts";
import { random, refusal, sampleDescriptor } from "../support/descriptor-sample.ts";

const sample = sampleDescriptor;

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
    expect(() => encodeDescriptor(foreignBackend)).toThrow("a kvm machine state under xen metadata");
    // KVM's state under metadata that names Xen, or a backend snowflock does not know.
    for (const [backend, why] of [
      ["xen", "section type 2 holds another backend's machine state than xen's"],
      ["hyperv", "backend 'hyperv' is not one snowflock knows"],
    ]) {
      const w = new SectionWriter();
      for (const { type, body } of walkSections(openEnvelope(encodeDescriptor(sample())).payload)) {
        w.add(type, type === 1 ? new TextEncoder().encode(JSON.stringify({ ...sample().meta, backend })) : body);
      }
      expect(refusal(sealEnvelope(w.bytes()))).toContain(why!);
    }
  });
});

describe("warm-up of a ready VMM", () => {
  test("a blank KVM state goes through the descriptor's code and back unchanged", async () => {
    const { blankKvmState } = await import("../../src/backend/kvm/persist.ts");
    const { warmUpDescriptorCode } = await import("../../src/descriptor/warm-up.ts");
    const blank = blankKvmState(64 << 20, 2);
    expect(() => warmUpDescriptorCode(blank, 64 << 20)).not.toThrow();
    const { descriptor } = decodeDescriptor(
      encodeDescriptor({ ...sample(), state: blank, meta: { ...sample().meta, memorySize: 64 << 20 } }),
    );
    expect(descriptor.state).toEqual(blank);
  });
});
