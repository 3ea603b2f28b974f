/**
 * The ACPI tables of a Linux guest: AML encodings, every table's checksum and pointers, and (with
 * ACPICA's iasl, which CI installs) the DSDT disassembled back to the devices it should name.
 */
import { describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as aml from "../../src/backend/kvm/acpi/aml.ts";
import { ACPI_AREA, acpiTables, GED_GSI, VMGENID_ADDRESS } from "../../src/backend/kvm/acpi/tables.ts";
import { KVM_REQUIRED } from "../support/kvm.ts";

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");
const sum = (bytes: Uint8Array) => bytes.reduce((s, b) => s + b, 0) & 0xff;

function tablesOf(area: Uint8Array) {
  const v = new DataView(area.buffer, area.byteOffset, area.byteLength);
  const at = (address: bigint | number) => Number(address) - ACPI_AREA.start;
  const tableAt = (offset: number) => {
    const length = v.getUint32(offset + 4, true);
    return {
      offset,
      signature: new TextDecoder().decode(area.subarray(offset, offset + 4)),
      bytes: area.subarray(offset, offset + length),
    };
  };
  const xsdt = tableAt(at(v.getBigUint64(24, true)));
  const pointed = [0, 1].map((i) => tableAt(at(v.getBigUint64(xsdt.offset + 36 + 8 * i, true))));
  const fadt = pointed.find((t) => t.signature === "FACP")!;
  const dsdt = tableAt(at(v.getBigUint64(fadt.offset + 140, true)));
  return { v, xsdt, fadt, madt: pointed.find((t) => t.signature === "APIC")!, dsdt, pointed };
}

describe("AML", () => {
  test("package lengths count themselves: one byte below 0x40, then 2 to 4", () => {
    expect(hex(aml.pkgLength(0x3e))).toBe("3f");
    expect(hex(aml.pkgLength(0x3f))).toBe("4104"); // 0x41 total: low nibble 1, then 0x04
    expect(hex(aml.pkgLength(0x800))).toBe("4280"); // 0x802: nibble 2, then 0x80
    expect(hex(aml.pkgLength(0x1000))).toBe("830001"); // 0x1003 needs a third byte
    expect(() => aml.pkgLength(2 ** 28)).toThrow(RangeError);
  });

  test("EISA IDs compress to 32 bits", () => {
    expect(hex(aml.eisaId("PNP0501"))).toBe("0c41d00501");
    expect(() => aml.eisaId("pnp0501")).toThrow(RangeError);
  });

  test("integers take the smallest form; names are 4-character segments", () => {
    expect([0, 1, 5, 0x1234, 0xe0040, 2 ** 40].map((n) => hex(aml.integer(n)))).toEqual([
      "00",
      "01",
      "0a05",
      "0b3412",
      "0c40000e00",
      "0e0000000000010000",
    ]);
    expect(new TextDecoder().decode(aml.nameString("_S5"))).toBe("_S5_");
    expect(hex(aml.nameString("\\_SB_.VGEN"))).toBe(`5c2e${hex(new TextEncoder().encode("_SB_VGEN"))}`);
    expect(aml.nameString("\\A.B.C")[1]).toBe(0x2f);
    expect(() => aml.nameString("vgen")).toThrow(RangeError);
    expect(() => aml.nameString("TOOLONG")).toThrow(RangeError);
  });
});

describe("ACPI tables", () => {
  const platform = { vcpus: 2, virtioMmio: [0, 1, 2].map((i) => ({ base: 0xd0000000 + i * 0x1000, gsi: 5 + i })) };
  const area = acpiTables(platform);

  test("the RSDP, XSDT, FADT, MADT and DSDT: checksums, pointers, hardware-reduced, one local APIC per vCPU", () => {
    expect(new TextDecoder().decode(area.subarray(0, 8))).toBe("RSD PTR ");
    expect(sum(area.subarray(0, 20))).toBe(0);
    expect(sum(area.subarray(0, 36))).toBe(0);
    const { v, xsdt, fadt, madt, dsdt, pointed } = tablesOf(area);
    expect([xsdt, ...pointed, dsdt].map((t) => [t.signature, sum(t.bytes)])).toEqual([
      ["XSDT", 0],
      ["FACP", 0],
      ["APIC", 0],
      ["DSDT", 0],
    ]);
    expect(v.getUint32(fadt.offset + 112, true) & (1 << 20)).not.toBe(0);
    expect(fadt.bytes.byteLength).toBe(276);
    const madtEntries = madt.bytes.subarray(44);
    const types: number[] = [];
    for (let at = 0; at < madtEntries.byteLength; at += madtEntries[at + 1]!) types.push(madtEntries[at]!);
    expect(types).toEqual([0, 0, 1, 4]);
    expect(ACPI_AREA.start + area.byteLength).toBeLessThanOrEqual(ACPI_AREA.end);
    // The VMGenID slot is left for the VMM to fill.
    expect(area.subarray(VMGENID_ADDRESS - ACPI_AREA.start, VMGENID_ADDRESS - ACPI_AREA.start + 16).every((b) => b === 0)).toBe(true);
  });

  test("vCPU counts the APIC IDs cannot hold are refused", () => {
    expect(() => acpiTables({ vcpus: 0, virtioMmio: [] })).toThrow(/vCPUs do not fit/);
    expect(() => acpiTables({ vcpus: 255, virtioMmio: [] })).toThrow(/vCPUs do not fit/);
  });

  test("the DSDT disassembles (iasl) to the virtio-mmio devices, the VM generation ID and the event device that notifies it", async () => {
    if (!Bun.which("iasl")) {
      if (KVM_REQUIRED) throw new Error("iasl is missing: apt-get install acpica-tools");
      console.log("skipped: no iasl (apt-get install acpica-tools)");
      return;
    }
    const dir = mkdtempSync(join(tmpdir(), "snowflock-acpi-"));
    writeFileSync(join(dir, "dsdt.dat"), tablesOf(area).dsdt.bytes);
    const run = Bun.spawnSync(["iasl", "-d", "dsdt.dat"], { cwd: dir, stdout: "pipe", stderr: "pipe" });
    expect(run.exitCode, run.stderr.toString()).toBe(0);
    const asl = readFileSync(join(dir, "dsdt.dsl"), "utf8");
    expect(asl.match(/Name \(_HID, "LNRO0005"\)/g)).toHaveLength(3);
    for (const d of platform.virtioMmio) {
      expect(asl).toContain(`0x${d.base.toString(16).toUpperCase()},         // Address Base`);
      expect(asl).toMatch(new RegExp(`Interrupt \\(ResourceConsumer, Level, ActiveHigh, Exclusive, ,, \\)\\s*\\{\\s*0x0000000${d.gsi},`));
    }
    expect(asl).toMatch(/Device \(COM1\)\s*\{\s*Name \(_HID, EisaId \("PNP0501"\)/);
    expect(asl).toMatch(/IO \(Decode16,\s*0x03F8,[^\n]*\n\s*0x03F8,[^\n]*\n\s*0x01,[^\n]*\n\s*0x08,/);
    expect(asl).toMatch(/Interrupt \(ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, \)\s*\{\s*0x00000004,/);
    expect(asl).toContain('Name (_HID, "VMGENCTR")');
    expect(asl).toMatch(/Name \(ADDR, Package \(0x02\)\s*\{\s*0x000E0040,\s*Zero\s*\}/);
    expect(asl).toMatch(/Interrupt \(ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, \)\s*\{\s*0x00000010,/);
    expect(asl).toMatch(new RegExp(`If \\(\\(Arg0 == 0x${GED_GSI.toString(16)}\\)\\)\\s*\\{\\s*Notify \\(\\\\_SB\\.VGEN, 0x80\\)`));
    expect(asl).toMatch(/Name \(_S5, Package \(0x02\)[^{]*\{\s*0x05,\s*Zero\s*\}/);
  });
});
