/**
 * The ACPI tables a Linux guest reads its machine from (ACPI 6.5, hardware-reduced, as microVMs
 * do): RSDP, XSDT, FADT, MADT and a DSDT that names the virtio-mmio devices (Linux finds them as
 * "LNRO0005"), the VM generation ID (VMGenID: a clone's kernel reseeds its random generator when
 * it changes) and the Generic Event Device whose interrupt tells it so. They sit in the BIOS area
 * from 0xe0000, where Linux scans for the RSDP; the E820 map reports it reserved.
 */
import { SnowflockError } from "../../../errors.ts";
import * as aml from "./aml.ts";
import { COM1_BASE, COM1_IRQ, COM1_PORTS } from "../serial.ts";
import { IOAPIC_ADDRESS, LAPIC_ADDRESS, tableChecksum } from "../firmware-tables.ts";

export const ACPI_AREA = { start: 0xe0000, end: 0xf0000 };
/** The 16-byte generation ID, right after the RSDP. */
export const VMGENID_ADDRESS = ACPI_AREA.start + 0x40;
export const VMGENID_BYTES = 16;
/** The Generic Event Device's interrupt (an IOAPIC pin above the ISA ones, edge-triggered). */
export const GED_GSI = 16;
/** Hardware-reduced ACPI's sleep registers: writing SLP_EN to the control register powers off. */
export const SLEEP_CONTROL_PORT = 0x600;
export const SLEEP_STATUS_PORT = 0x601;
export const SLEEP_ENABLE = 0x20;

export const OEM_ID = "SNOWFL";
const OEM_REVISION = 1;
const CREATOR_ID = "SFLK";
const HEADER_BYTES = 36;
const XSDT_AT = 0x80;
const S5_SLEEP_TYPE = 5;

/** The machine the tables describe. */
export interface AcpiPlatform {
  vcpus: number;
  /** virtio-mmio devices: each 4 KiB window and its level-triggered interrupt. */
  virtioMmio: Array<{ base: number; gsi: number }>;
}

function ascii(text: string, length: number): Uint8Array {
  return new TextEncoder().encode(text.padEnd(length, " ").slice(0, length));
}

/** A system description table: the common header over `body`, its checksum set. */
function table(signature: string, revision: number, tableId: string, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(HEADER_BYTES + body.byteLength);
  const v = new DataView(out.buffer);
  out.set(ascii(signature, 4), 0);
  v.setUint32(4, out.byteLength, true);
  out[8] = revision;
  out.set(ascii(OEM_ID, 6), 10);
  out.set(ascii(tableId, 8), 16);
  v.setUint32(24, OEM_REVISION, true);
  out.set(ascii(CREATOR_ID, 4), 28);
  v.setUint32(32, 1, true);
  out.set(body, HEADER_BYTES);
  out[9] = tableChecksum(out);
  return out;
}

/** A Generic Address Structure for a byte-wide I/O port. */
function ioPort(view: DataView, at: number, port: number): void {
  view.setUint8(at, 1); // system I/O
  view.setUint8(at + 1, 8); // bit width
  view.setUint8(at + 2, 0);
  view.setUint8(at + 3, 1); // byte access
  view.setBigUint64(at + 4, BigInt(port), true);
}

function fadt(dsdtAddress: number): Uint8Array {
  const body = new Uint8Array(276 - HEADER_BYTES);
  const v = new DataView(body.buffer);
  const at = (offset: number) => offset - HEADER_BYTES;
  // IAPC_BOOT_ARCH: no VGA (bit 2), no MSI (bit 3), no CMOS RTC (bit 5); no 8042 (bit 1 clear).
  v.setUint16(at(109), (1 << 2) | (1 << 3) | (1 << 5), true);
  // Flags: power and sleep buttons are control methods (none), hardware-reduced ACPI.
  v.setUint32(at(112), (1 << 4) | (1 << 5) | (1 << 20), true);
  v.setUint8(at(131), 5); // FADT minor version: 6.5
  v.setBigUint64(at(140), BigInt(dsdtAddress), true);
  ioPort(v, at(244), SLEEP_CONTROL_PORT);
  ioPort(v, at(256), SLEEP_STATUS_PORT);
  body.set(ascii("SNOWFLCK", 8), at(268)); // hypervisor vendor identity
  return table("FACP", 6, "SFVMFADT", body);
}

function madt(vcpus: number): Uint8Array {
  const ioapicId = vcpus; // as in the MP table: after the CPUs' APIC IDs
  const entries: number[][] = [];
  for (let cpu = 0; cpu < vcpus; cpu++) entries.push([0, 8, cpu, cpu, 1, 0, 0, 0]);
  const ioapic = new Uint8Array(12);
  const iv = new DataView(ioapic.buffer);
  ioapic.set([1, 12, ioapicId, 0]);
  iv.setUint32(4, IOAPIC_ADDRESS, true);
  iv.setUint32(8, 0, true);
  entries.push([...ioapic]);
  // NMI on every processor's LINT1 (processor UID 0xff: all).
  entries.push([4, 6, 0xff, 0, 0, 1]);
  const fixed = new Uint8Array(8);
  const fv = new DataView(fixed.buffer);
  fv.setUint32(0, LAPIC_ADDRESS, true);
  fv.setUint32(4, 1, true); // PCAT_COMPAT: the 8259s are there too
  return table("APIC", 5, "SFVMMADT", Uint8Array.from([...fixed, ...entries.flat()]));
}

function dsdt(platform: AcpiPlatform): Uint8Array {
  const devices = platform.virtioMmio.map((d, i) =>
    aml.device(`V${i.toString(16).toUpperCase().padStart(3, "0")}`, [
      aml.name("_HID", aml.string("LNRO0005")),
      aml.name("_UID", aml.integer(i)),
      aml.name("_CRS", aml.resourceTemplate([aml.memory32Fixed(d.base, 0x1000), aml.interrupt(d.gsi, "level")])),
    ]),
  );
  const body = [
    aml.scope("\\_SB_", [
      // A hardware-reduced machine has no legacy PIC for Linux to map ISA IRQs from: the console
      // gets its interrupt through this description (Linux's 8250_pnp).
      aml.device("COM1", [
        aml.name("_HID", aml.eisaId("PNP0501")),
        aml.name("_UID", aml.integer(0)),
        aml.name("_DDN", aml.string("COM1")),
        aml.name("_CRS", aml.resourceTemplate([aml.interrupt(COM1_IRQ, "edge"), aml.ioPorts(COM1_BASE, COM1_PORTS)])),
      ]),
      ...devices,
      aml.device("VGEN", [
        aml.name("_HID", aml.string("VMGENCTR")),
        aml.name("_CID", aml.string("VM_Gen_Counter")),
        aml.name("_DDN", aml.string("VM_Gen_Counter")),
        aml.name("ADDR", aml.packageOf([aml.integer(VMGENID_ADDRESS), aml.integer(0)])),
      ]),
      aml.device("GED_", [
        aml.name("_HID", aml.string("ACPI0013")),
        aml.name("_UID", aml.integer(0)),
        aml.name("_CRS", aml.resourceTemplate([aml.interrupt(GED_GSI, "edge")])),
        aml.method("_EVT", 1, [aml.ifThen(aml.equal(aml.ARG0, aml.integer(GED_GSI)), [aml.notify("\\_SB_.VGEN", 0x80)])]),
      ]),
    ]),
    aml.name("_S5_", aml.packageOf([aml.integer(S5_SLEEP_TYPE), aml.integer(0)])),
  ];
  return table("DSDT", 2, "SFVMDSDT", Uint8Array.from(body.flatMap((b) => [...b])));
}

function rsdp(xsdtAddress: number): Uint8Array {
  const out = new Uint8Array(36);
  const v = new DataView(out.buffer);
  out.set(ascii("RSD PTR ", 8), 0);
  out.set(ascii(OEM_ID, 6), 9);
  out[15] = 2; // ACPI 2.0+: the XSDT
  v.setUint32(20, out.byteLength, true);
  v.setBigUint64(24, BigInt(xsdtAddress), true);
  out[8] = tableChecksum(out.subarray(0, 20));
  out[32] = tableChecksum(out);
  return out;
}

/** Every table, laid out from ACPI_AREA.start: the bytes to copy there (the VMGenID slot zero). */
export function acpiTables(platform: AcpiPlatform): Uint8Array {
  if (platform.vcpus < 1 || platform.vcpus > 0xfe)
    throw new SnowflockError("USAGE", `${platform.vcpus} vCPUs do not fit the ACPI tables' APIC IDs`);
  const area = new Uint8Array(ACPI_AREA.end - ACPI_AREA.start);
  let next = XSDT_AT;
  const place = (bytes: Uint8Array) => {
    const at = next;
    if (at + bytes.byteLength > area.byteLength) throw new SnowflockError("INTERNAL", "the ACPI tables outgrew their area");
    area.set(bytes, at);
    next = (at + bytes.byteLength + 15) & ~15;
    return ACPI_AREA.start + at;
  };
  // The XSDT first, at a fixed place, with room for its two pointers; filled in below.
  const xsdtLength = HEADER_BYTES + 2 * 8;
  next = XSDT_AT + ((xsdtLength + 15) & ~15);
  const dsdtAddress = place(dsdt(platform));
  const fadtAddress = place(fadt(dsdtAddress));
  const madtAddress = place(madt(platform.vcpus));
  const pointers = new Uint8Array(16);
  new DataView(pointers.buffer).setBigUint64(0, BigInt(fadtAddress), true);
  new DataView(pointers.buffer).setBigUint64(8, BigInt(madtAddress), true);
  area.set(table("XSDT", 1, "SFVMXSDT", pointers), XSDT_AT);
  area.set(rsdp(ACPI_AREA.start + XSDT_AT), 0);
  return area.subarray(0, next);
}
