/** The kernel image loader treats the image as input: malformed images fail with a clear error. */
import { describe, expect, test } from "bun:test";
import { parseKernelImage } from "../../src/guest/elf.ts";
import { refusalMessage } from "../support/refusal.ts";

/** A minimal ELF64 with one PT_LOAD and one PT_NOTE holding a PVH entry note. */
function image({ entry = 0x100000, noteName = "Xen", noteType = 18 } = {}): Uint8Array {
  const bytes = new Uint8Array(0x200);
  const v = new DataView(bytes.buffer);
  v.setUint32(0, 0x7f454c46);
  v.setUint8(4, 2);
  v.setUint8(5, 1);
  v.setUint16(18, 62, true);
  v.setBigUint64(32, 64n, true); // phoff
  v.setUint16(54, 56, true);
  v.setUint16(56, 2, true);
  // PT_LOAD: 16 bytes at file 0x100 to 0x100000, 32 bytes in memory
  v.setUint32(64, 1, true);
  v.setBigUint64(64 + 8, 0x100n, true);
  v.setBigUint64(64 + 24, 0x100000n, true);
  v.setBigUint64(64 + 32, 16n, true);
  v.setBigUint64(64 + 40, 32n, true);
  // PT_NOTE at 0x180
  const name = new TextEncoder().encode(`${noteName}\0`);
  v.setUint32(120, 4, true);
  v.setBigUint64(120 + 8, 0x180n, true);
  v.setBigUint64(120 + 32, BigInt(12 + ((name.length + 3) & ~3) + 4), true);
  v.setUint32(0x180, name.length, true);
  v.setUint32(0x184, 4, true);
  v.setUint32(0x188, noteType, true);
  bytes.set(name, 0x18c);
  v.setUint32(0x18c + ((name.length + 3) & ~3), entry, true);
  return bytes;
}

const failure = (bytes: Uint8Array) => refusalMessage(() => parseKernelImage(bytes));

describe("PVH kernel image", () => {
  test("finds the segments and the PVH entry", () => {
    const k = parseKernelImage(image({ entry: 0x100abc }));
    expect(k.pvhEntry).toBe(0x100abc);
    expect(k.segments).toHaveLength(1);
    expect(k.segments[0]).toMatchObject({ physicalAddress: 0x100000, memorySize: 32 });
    expect(k.segments[0]!.data.byteLength).toBe(16);
  });

  test("refuses what is not a bootable PVH ELF", () => {
    expect(failure(new Uint8Array(10))).toContain("too short");
    const noMagic = image();
    noMagic[0] = 0;
    expect(failure(noMagic)).toContain("no ELF magic");
    expect(failure(image({ noteName: "Linux" }))).toContain("no XEN_ELFNOTE_PHYS32_ENTRY");
    expect(failure(image({ noteType: 17 }))).toContain("no XEN_ELFNOTE_PHYS32_ENTRY");
    const truncated = image().slice(0, 0x104);
    expect(failure(truncated)).toContain("out of bounds");
    const badPhdrs = image();
    new DataView(badPhdrs.buffer).setUint16(56, 1000, true);
    expect(failure(badPhdrs)).toContain("program headers out of bounds");
  });
});
