import { describe, expect, test } from "bun:test";
import { e820Map } from "../../src/backend/kvm/e820.ts";
import { linuxMemoryNeeded, loadLinuxKernel, ZERO_PAGE_ADDRESS } from "../../src/backend/kvm/linux-boot.ts";
import { MPTABLE_ADDRESS, mpTable } from "../../src/backend/kvm/mptable.ts";
import { looksLikeBzImage, parseBzImage } from "../../src/guest/bzimage.ts";
import { GuestMemory } from "../../src/guest-memory/guest-memory.ts";
import { refusalMessage } from "../support/refusal.ts";
import { bzImage } from "../support/bzimage-sample.ts";

const MiB = 2 ** 20;

const payload = new Uint8Array(8192).map((_, i) => (i * 7 + 3) & 0xff);

describe("Linux bzImage: the setup header, and the boot protocol's zero page", () => {
  test("a bzImage's header reads as the boot protocol says", () => {
    const image = bzImage(payload);
    expect(looksLikeBzImage(image)).toBe(true);
    const kernel = parseBzImage(image);
    expect(kernel.protocol).toBe(0x020f);
    expect(kernel.loadAddress).toBe(0x100000);
    expect(kernel.initSize).toBe(4 * MiB);
    expect(kernel.initrdEnd).toBe(0x80000000);
    expect(kernel.cmdlineMax).toBe(2047);
    expect(kernel.relocatable).toBe(true);
    expect(kernel.kernel64).toBe(true);
    expect(kernel.protectedMode).toEqual(payload);
    expect(kernel.setupHeader.byteLength).toBe(0x26c - 0x1f1);
  });

  test("what is not a bzImage is refused in one line that says why", () => {
    const elf = new Uint8Array(4096);
    elf.set([0x7f, 0x45, 0x4c, 0x46]);
    expect(looksLikeBzImage(elf)).toBe(false);
    expect(refusalMessage(() => parseBzImage(elf))).toContain("no boot flag");
    expect(refusalMessage(() => parseBzImage(new Uint8Array(100)))).toContain("too short");
    expect(refusalMessage(() => parseBzImage(bzImage(payload, (v) => v.setUint16(0x206, 0x0204, true))))).toContain("boot protocol 2.04");
    expect(refusalMessage(() => parseBzImage(bzImage(payload, (v) => v.setUint8(0x211, 0))))).toContain("zImage");
    expect(refusalMessage(() => parseBzImage(bzImage(payload, (v) => v.setUint8(0x1f1, 200))))).toContain("setup sectors");
    expect(refusalMessage(() => parseBzImage(bzImage(payload, (v) => v.setUint32(0x260, 16, true))))).toContain("init_size");
    expect(refusalMessage(() => parseBzImage(bzImage(payload, (v) => v.setUint8(0x201, 0x20))))).toContain("setup header ends");
  });

  test("loading puts the kernel at 1 MiB and fills the zero page: header, loader, command line, E820, initrd high", () => {
    const memory = GuestMemory.create(64 * MiB);
    try {
      const kernel = parseBzImage(bzImage(payload));
      const initrd = new Uint8Array(3 * 4096 + 5).fill(0x5a);
      const boot = loadLinuxKernel(memory, kernel, "console=ttyS0 panic=-1", 2, initrd);
      expect(boot.entry).toBe(0x100000);
      expect(boot.zeroPage).toBe(ZERO_PAGE_ADDRESS);
      expect(memory.bytes.subarray(0x100000, 0x100000 + payload.byteLength)).toEqual(payload);
      const params = new DataView(memory.bytes.buffer, memory.bytes.byteOffset + ZERO_PAGE_ADDRESS, 4096);
      expect(params.getUint32(0x202, true)).toBe(0x53726448);
      expect(params.getUint8(0x210)).toBe(0xff);
      const cmdlineAt = params.getUint32(0x228, true);
      const cmdline = memory.bytes.subarray(cmdlineAt, cmdlineAt + 64);
      expect(new TextDecoder().decode(cmdline.subarray(0, cmdline.indexOf(0)))).toBe("console=ttyS0 panic=-1");
      const map = e820Map(memory.layout);
      expect(params.getUint8(0x1e8)).toBe(map.length);
      map.forEach((entry, i) => {
        expect(Number(params.getBigUint64(0x2d0 + i * 20, true))).toBe(entry.address);
        expect(Number(params.getBigUint64(0x2d0 + i * 20 + 8, true))).toBe(entry.size);
        expect(params.getUint32(0x2d0 + i * 20 + 16, true)).toBe(entry.type);
      });
      const initrdAt = params.getUint32(0x218, true);
      expect(params.getUint32(0x21c, true)).toBe(initrd.byteLength);
      expect(initrdAt % 4096).toBe(0);
      expect(initrdAt + initrd.byteLength).toBeLessThanOrEqual(64 * MiB);
      expect(initrdAt).toBeGreaterThanOrEqual(16 * MiB + kernel.initSize);
      expect(memory.bytes.subarray(initrdAt, initrdAt + initrd.byteLength)).toEqual(initrd);
      expect(boot.initrd).toEqual({ address: initrdAt, size: initrd.byteLength });
    } finally {
      memory.close();
    }
  });

  test("too little memory, a command line over the kernel's limit, a load address below 1 MiB: refused before anything runs", () => {
    const kernel = parseBzImage(bzImage(payload, (v) => v.setUint32(0x260, 40 * MiB, true)));
    expect(linuxMemoryNeeded(kernel, 0)).toBe(56 * MiB);
    const memory = GuestMemory.create(32 * MiB);
    try {
      expect(refusalMessage(() => loadLinuxKernel(memory, kernel, "", 1))).toContain("need at least 56 MiB");
      const small = parseBzImage(bzImage(payload));
      expect(refusalMessage(() => loadLinuxKernel(memory, small, "x".repeat(2048), 1))).toContain("at most 2047");
      const low = parseBzImage(bzImage(payload, (v) => v.setUint32(0x214, 0x90000, true)));
      expect(refusalMessage(() => loadLinuxKernel(memory, low, "", 1))).toContain("below 1 MiB");
    } finally {
      memory.close();
    }
  });

  test("the MP table: floating pointer and configuration table with right checksums, a processor per vCPU, the IOAPIC, 16 ISA IRQs", () => {
    const table = mpTable(3);
    const sum = (bytes: Uint8Array) => bytes.reduce((n, b) => n + b, 0) & 0xff;
    const v = new DataView(table.buffer);
    expect(new TextDecoder().decode(table.subarray(0, 4))).toBe("_MP_");
    expect(sum(table.subarray(0, 16))).toBe(0);
    const configAt = v.getUint32(4, true) - MPTABLE_ADDRESS;
    expect(configAt).toBe(16);
    const length = v.getUint16(configAt + 4, true);
    expect(new TextDecoder().decode(table.subarray(configAt, configAt + 4))).toBe("PCMP");
    expect(sum(table.subarray(configAt, configAt + length))).toBe(0);
    expect(configAt + length).toBe(table.byteLength);
    // Entries: 3 processors (20 bytes), bus, IOAPIC, 16 IO interrupts, 2 local interrupts (8 bytes each).
    expect(v.getUint16(configAt + 34, true)).toBe(3 + 1 + 1 + 16 + 2);
    const processors = [0, 1, 2].map((i) => table.subarray(configAt + 44 + i * 20, configAt + 44 + (i + 1) * 20));
    expect(processors.map((p) => [p[0], p[1], p[3]])).toEqual([
      [0, 0, 3],
      [0, 1, 1],
      [0, 2, 1],
    ]);
    const ioapic = table.subarray(configAt + 44 + 60 + 8, configAt + 44 + 60 + 16);
    expect([ioapic[0], ioapic[1]]).toEqual([2, 3]);
    expect(new DataView(ioapic.buffer, ioapic.byteOffset).getUint32(4, true)).toBe(0xfec00000);
  });
});
