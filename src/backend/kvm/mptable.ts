/**
 * An Intel MultiProcessor table (MP spec 1.4), how a Linux kernel booted without ACPI learns the
 * machine's CPUs and interrupt wiring: one processor entry per vCPU, an ISA bus, the in-kernel
 * IOAPIC with ISA IRQ n on its pin n (KVM's default routing), ExtINT on LINT0 and NMI on LINT1.
 * Without it Linux runs in "virtual wire" mode on one CPU. It sits in the BIOS area (0xf0000 up),
 * which the E820 map reports reserved, where Linux scans for the "_MP_" signature.
 */
import { SnowflockError } from "../../errors.ts";
import { IOAPIC_ADDRESS, LAPIC_ADDRESS, tableChecksum } from "./firmware-tables.ts";

export const MPTABLE_ADDRESS = 0xf0000;
const LAPIC_VERSION = 0x14;
const IOAPIC_VERSION = 0x11;
const ISA_IRQS = 16;
/** The MP spec's room: the table must end below 0x100000. */
const AREA_END = 0x100000;

const PROCESSOR = 0;
const BUS = 1;
const IOAPIC = 2;
const IO_INTERRUPT = 3;
const LOCAL_INTERRUPT = 4;
const INT = 0;
const NMI = 1;
const EXTINT = 3;
const CPU_ENABLED = 1;
const CPU_BSP = 2;

/** The table for `vcpus` vCPUs (APIC IDs 0..vcpus-1), as bytes to place at MPTABLE_ADDRESS. */
export function mpTable(vcpus: number): Uint8Array {
  const ioapicId = vcpus;
  if (ioapicId > 0xfe) throw new SnowflockError("USAGE", `${vcpus} vCPUs do not fit an MP table's APIC IDs`);
  const entries: Uint8Array[] = [];
  const entry = (size: number, fill: (v: DataView) => void) => {
    const bytes = new Uint8Array(size);
    fill(new DataView(bytes.buffer));
    entries.push(bytes);
  };
  for (let cpu = 0; cpu < vcpus; cpu++) {
    entry(20, (v) => {
      v.setUint8(0, PROCESSOR);
      v.setUint8(1, cpu);
      v.setUint8(2, LAPIC_VERSION);
      v.setUint8(3, CPU_ENABLED | (cpu === 0 ? CPU_BSP : 0));
      v.setUint32(4, 0x600, true); // family 6: the CPUID leaf 1 says what the CPU really is
      v.setUint32(8, 0x201, true); // FPU, APIC
    });
  }
  entry(8, (v) => {
    v.setUint8(0, BUS);
    v.setUint8(1, 0);
    new Uint8Array(v.buffer).set(new TextEncoder().encode("ISA   "), 2);
  });
  entry(8, (v) => {
    v.setUint8(0, IOAPIC);
    v.setUint8(1, ioapicId);
    v.setUint8(2, IOAPIC_VERSION);
    v.setUint8(3, 1); // usable
    v.setUint32(4, IOAPIC_ADDRESS, true);
  });
  for (let irq = 0; irq < ISA_IRQS; irq++) {
    entry(8, (v) => {
      v.setUint8(0, IO_INTERRUPT);
      v.setUint8(1, INT);
      v.setUint16(2, 0, true); // polarity and trigger as the bus says (ISA: high, edge)
      v.setUint8(4, 0);
      v.setUint8(5, irq);
      v.setUint8(6, ioapicId);
      v.setUint8(7, irq);
    });
  }
  for (const [type, lint, destination] of [
    [EXTINT, 0, 0],
    [NMI, 1, 0xff],
  ] as const) {
    entry(8, (v) => {
      v.setUint8(0, LOCAL_INTERRUPT);
      v.setUint8(1, type);
      v.setUint8(4, 0);
      v.setUint8(6, destination);
      v.setUint8(7, lint);
    });
  }

  const HEADER = 44;
  const bodyLength = entries.reduce((n, e) => n + e.byteLength, 0);
  const table = new Uint8Array(16 + HEADER + bodyLength);
  if (MPTABLE_ADDRESS + table.byteLength > AREA_END) throw new SnowflockError("USAGE", `${vcpus} vCPUs make the MP table too long`);
  const text = (at: number, s: string) => table.set(new TextEncoder().encode(s), at);

  // The configuration table, after the 16-byte floating pointer.
  const config = table.subarray(16);
  const c = new DataView(config.buffer, config.byteOffset, config.byteLength);
  text(16, "PCMP");
  c.setUint16(4, HEADER + bodyLength, true);
  c.setUint8(6, 4); // spec 1.4
  text(16 + 8, "SNOWFLCK");
  text(16 + 16, "KVM MACHINE ");
  c.setUint16(34, entries.length, true);
  c.setUint32(36, LAPIC_ADDRESS, true);
  let at = HEADER;
  for (const e of entries) {
    config.set(e, at);
    at += e.byteLength;
  }
  c.setUint8(7, tableChecksum(config));

  // The floating pointer: where the configuration table is.
  const f = new DataView(table.buffer, 0, 16);
  text(0, "_MP_");
  f.setUint32(4, MPTABLE_ADDRESS + 16, true);
  f.setUint8(8, 1); // length in 16-byte units
  f.setUint8(9, 4);
  f.setUint8(10, tableChecksum(table.subarray(0, 16)));
  return table;
}
