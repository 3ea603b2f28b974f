/**
 * Booting a stock Linux bzImage the way a boot loader does with the 32-bit boot protocol
 * (Documentation/arch/x86/boot.rst): its protected-mode kernel at its load address, a zero page
 * (struct boot_params) with the setup header, the E820 map, the command line and the initrd, an
 * MP table for the vCPUs and the interrupt wiring (mptable.ts), ACPI tables for the same and the
 * devices (acpi/tables.ts; a kernel booted with acpi=off reads the MP table), a fresh VM
 * generation ID, and the boot vCPU in flat 32-bit protected mode at the kernel with %esi at the zero page. The
 * kernel decompresses itself and enters long mode on its own.
 */
import { SnowflockError } from "../../errors.ts";
import { type BzImage, SETUP_HEADER_START } from "../../guest/bzimage.ts";
import type { GuestMemory } from "../../guest-memory/guest-memory.ts";
import { PAGE_SIZE } from "../../guest-memory/layout.ts";
import { e820Map, LEGACY_HOLE } from "./e820.ts";
import { MPTABLE_ADDRESS, mpTable } from "./mptable.ts";
import { ACPI_AREA, type AcpiPlatform, acpiTables } from "./acpi/tables.ts";
import { writeVmGenerationId } from "./acpi/vmgenid.ts";

/** Below the legacy window and clear of the PVH start info (0x1000-0x2fff). */
export const ZERO_PAGE_ADDRESS = 0x7000;
const CMDLINE_ADDRESS = 0x20000;
/** x86-64 kernels decompress to 16 MiB (CONFIG_PHYSICAL_START) or above: the initrd must stay clear of that. */
const DECOMPRESS_ADDRESS = 0x100_0000;
const MAX_E820_ENTRIES = 128;

/** struct boot_params offsets outside the setup header. */
const E820_ENTRIES = 0x1e8;
const E820_TABLE = 0x2d0;
const E820_ENTRY_SIZE = 20;
const ACPI_RSDP_ADDR = 0x070;
const EXT_RAMDISK_IMAGE = 0x0c0;
const EXT_RAMDISK_SIZE = 0x0c4;
const EXT_CMD_LINE_PTR = 0x0c8;
/** Setup header fields a boot loader fills in (absolute offsets in boot_params). */
const VID_MODE = 0x1fa;
const TYPE_OF_LOADER = 0x210;
const RAMDISK_IMAGE = 0x218;
const RAMDISK_SIZE = 0x21c;
const CMD_LINE_PTR = 0x228;
/** "Undefined" boot loader: the kernel asks nothing of it. */
const LOADER_UNDEFINED = 0xff;
const VIDEO_MODE_NORMAL = 0xffff;

export interface LinuxBoot {
  /** Where the boot vCPU starts (the protected-mode kernel's first byte). */
  entry: number;
  /** Its %esi: the zero page. */
  zeroPage: number;
  /** Where the initrd went, if any. */
  initrd?: { address: number; size: number };
}

/** Where the room `kernel` decompresses and starts in ends: nothing else of the boot may lie below. */
const kernelRoomEnd = (kernel: BzImage) => Math.max(kernel.loadAddress, DECOMPRESS_ADDRESS) + kernel.initSize;
const wholePages = (n: number) => Math.ceil(n / PAGE_SIZE) * PAGE_SIZE;

/** What `kernel` needs at least, for `initrdBytes` more: its decompression room and the initrd above it. */
export function linuxMemoryNeeded(kernel: BzImage, initrdBytes: number): number {
  return wholePages(kernelRoomEnd(kernel)) + wholePages(initrdBytes);
}

export function loadLinuxKernel(
  memory: GuestMemory,
  kernel: BzImage,
  cmdline: string,
  vcpus: number,
  initrd?: Uint8Array,
  virtioMmio: AcpiPlatform["virtioMmio"] = [],
): LinuxBoot {
  const needed = linuxMemoryNeeded(kernel, initrd?.byteLength ?? 0);
  const low = memory.layout.regions[0]!;
  if (low.size < needed) {
    throw new SnowflockError(
      "GUEST_IMAGE",
      `this kernel${initrd ? " and initrd" : ""} need at least ${Math.ceil(needed / 2 ** 20)} MiB of guest memory below 3 GiB; ` +
        `the VM has ${Math.floor(low.size / 2 ** 20)} MiB`,
      "give it more with --mem",
    );
  }
  if (kernel.loadAddress < LEGACY_HOLE.end) {
    throw new SnowflockError("GUEST_IMAGE", `the kernel asks to be loaded at 0x${kernel.loadAddress.toString(16)}, below 1 MiB`);
  }
  const cmd = new TextEncoder().encode(cmdline);
  if (cmd.byteLength > kernel.cmdlineMax) {
    throw new SnowflockError("WORKLOAD", `the command line is ${cmd.byteLength} bytes; this kernel takes at most ${kernel.cmdlineMax}`);
  }
  const bytes = memory.bytes;
  bytes.set(kernel.protectedMode, kernel.loadAddress);
  bytes.set(mpTable(vcpus), MPTABLE_ADDRESS);
  bytes.set(acpiTables({ vcpus, virtioMmio }), ACPI_AREA.start);
  writeVmGenerationId(memory);
  bytes.fill(0, CMDLINE_ADDRESS, CMDLINE_ADDRESS + cmd.byteLength + 1);
  bytes.set(cmd, CMDLINE_ADDRESS);

  const zeroPage = bytes.subarray(ZERO_PAGE_ADDRESS, ZERO_PAGE_ADDRESS + PAGE_SIZE);
  zeroPage.fill(0);
  zeroPage.set(kernel.setupHeader, SETUP_HEADER_START);
  const params = new DataView(zeroPage.buffer, zeroPage.byteOffset, PAGE_SIZE);
  params.setUint16(VID_MODE, VIDEO_MODE_NORMAL, true);
  params.setUint8(TYPE_OF_LOADER, LOADER_UNDEFINED);
  params.setUint32(CMD_LINE_PTR, CMDLINE_ADDRESS, true);
  params.setUint32(EXT_CMD_LINE_PTR, 0, true);
  params.setBigUint64(ACPI_RSDP_ADDR, BigInt(ACPI_AREA.start), true);

  const map = e820Map(memory.layout);
  if (map.length > MAX_E820_ENTRIES)
    throw new SnowflockError("INTERNAL", `${map.length} E820 entries; boot_params holds ${MAX_E820_ENTRIES}`);
  params.setUint8(E820_ENTRIES, map.length);
  map.forEach(({ address, size, type }, i) => {
    const at = E820_TABLE + i * E820_ENTRY_SIZE;
    params.setBigUint64(at, BigInt(address), true);
    params.setBigUint64(at + 8, BigInt(size), true);
    params.setUint32(at + 16, type, true);
  });

  let placed: LinuxBoot["initrd"];
  if (initrd && initrd.byteLength > 0) {
    // As high as the kernel allows, page-aligned: clear of the kernel while it decompresses.
    const top = Math.min(low.size, kernel.initrdEnd);
    const address = Math.floor((top - initrd.byteLength) / PAGE_SIZE) * PAGE_SIZE;
    if (address < kernelRoomEnd(kernel)) {
      throw new SnowflockError(
        "GUEST_IMAGE",
        `the initrd (${initrd.byteLength} bytes) does not fit below 0x${top.toString(16)} clear of the kernel`,
        "give the VM more memory with --mem",
      );
    }
    bytes.set(initrd, address);
    params.setUint32(RAMDISK_IMAGE, address, true);
    params.setUint32(RAMDISK_SIZE, initrd.byteLength, true);
    params.setUint32(EXT_RAMDISK_IMAGE, 0, true);
    params.setUint32(EXT_RAMDISK_SIZE, 0, true);
    placed = { address, size: initrd.byteLength };
  }
  return { entry: kernel.loadAddress, zeroPage: ZERO_PAGE_ADDRESS, initrd: placed };
}
