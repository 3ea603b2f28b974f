/**
 * Just enough of a Linux bzImage to boot it through the 32-bit boot protocol
 * (Documentation/arch/x86/boot.rst): the setup header a boot loader copies into boot_params, and
 * the protected-mode kernel that decompresses itself. The file is input like any other: every
 * offset and size is checked before use, and the refusal says what the file is not.
 */
import { SnowflockError } from "../errors.ts";

export interface BzImage {
  /** Boot protocol version, e.g. 0x020f for 2.15. */
  protocol: number;
  /** The setup header as in the file, from 0x1f1 to its end: copied into boot_params at the same offset. */
  setupHeader: Uint8Array;
  /** The 32-bit kernel, loaded at `loadAddress`; it decompresses the real kernel itself. */
  protectedMode: Uint8Array;
  /** Where the protected-mode kernel runs from: its code32_start (1 MiB for a bzImage). */
  loadAddress: number;
  /** Bytes the kernel needs from its load address while it decompresses and starts. */
  initSize: number;
  /** The highest address the initrd may end at, plus one. */
  initrdEnd: number;
  /** The longest command line it takes, without its terminating zero. */
  cmdlineMax: number;
  relocatable: boolean;
  /** XLF_KERNEL_64: it has the 64-bit entry (every x86-64 kernel). */
  kernel64: boolean;
}

/** Offsets in the first sector and the setup header (boot.rst "The real-mode kernel header"). */
export const SETUP_HEADER_START = 0x1f1;
const SETUP_SECTS = 0x1f1;
const BOOT_FLAG = 0x1fe;
const HEADER_MAGIC = 0x202;
const VERSION = 0x206;
const LOADFLAGS = 0x211;
const CODE32_START = 0x214;
const INITRD_ADDR_MAX = 0x22c;
const RELOCATABLE_KERNEL = 0x234;
const XLOADFLAGS = 0x236;
const CMDLINE_SIZE = 0x238;
const INIT_SIZE = 0x260;
/** Byte 0x201 holds the header's length past 0x202 (the end of the jump there). */
const HEADER_LENGTH = 0x201;

const LOADED_HIGH = 0x01;
const XLF_KERNEL_64 = 0x01;
/** 2.06 added cmdline_size; 2.10 init_size. Older kernels (2009 and before) are not worth a path. */
const MIN_PROTOCOL = 0x020a;

function bad(why: string): never {
  throw new SnowflockError("GUEST_IMAGE", `not a bootable Linux kernel (bzImage): ${why}`);
}

/** Whether `image` starts like a bzImage (boot flag and "HdrS"): the caller then parses it, or tries ELF. */
export function looksLikeBzImage(image: Uint8Array): boolean {
  if (image.byteLength < HEADER_MAGIC + 4) return false;
  const v = new DataView(image.buffer, image.byteOffset, image.byteLength);
  return v.getUint16(BOOT_FLAG, true) === 0xaa55 && v.getUint32(HEADER_MAGIC, true) === 0x53726448;
}

export function parseBzImage(image: Uint8Array): BzImage {
  if (image.byteLength < 1024) bad(`${image.byteLength} bytes, too short for a boot sector and setup header`);
  if (!looksLikeBzImage(image)) bad('no boot flag 0xaa55 and "HdrS" signature where the setup header goes');
  const v = new DataView(image.buffer, image.byteOffset, image.byteLength);
  const protocol = v.getUint16(VERSION, true);
  const version = `${protocol >> 8}.${(protocol & 0xff).toString().padStart(2, "0")}`;
  if (protocol < MIN_PROTOCOL) bad(`boot protocol ${version}; 2.10 or later is needed`);
  const loadflags = v.getUint8(LOADFLAGS);
  if ((loadflags & LOADED_HIGH) === 0) bad("a zImage (loaded below 1 MiB), not a bzImage");
  const headerEnd = HEADER_MAGIC + v.getUint8(HEADER_LENGTH);
  if (headerEnd <= INIT_SIZE + 4) bad(`its setup header ends at 0x${headerEnd.toString(16)}, before init_size`);
  // A setup_sects of 0 means 4 (boot.rst).
  const setupSectors = v.getUint8(SETUP_SECTS) || 4;
  const protectedStart = (setupSectors + 1) * 512;
  if (protectedStart >= image.byteLength)
    bad(`its ${setupSectors} setup sectors leave no protected-mode kernel in ${image.byteLength} bytes`);
  const initSize = v.getUint32(INIT_SIZE, true);
  const protectedMode = image.subarray(protectedStart);
  if (initSize < protectedMode.byteLength) bad(`init_size ${initSize} is below the kernel's own ${protectedMode.byteLength} bytes`);
  return {
    protocol,
    setupHeader: image.slice(SETUP_HEADER_START, headerEnd),
    protectedMode,
    loadAddress: v.getUint32(CODE32_START, true),
    initSize,
    initrdEnd: v.getUint32(INITRD_ADDR_MAX, true) + 1,
    cmdlineMax: v.getUint32(CMDLINE_SIZE, true),
    relocatable: v.getUint8(RELOCATABLE_KERNEL) !== 0,
    kernel64: (v.getUint16(XLOADFLAGS, true) & XLF_KERNEL_64) !== 0,
  };
}
