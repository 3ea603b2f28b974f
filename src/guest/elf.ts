/**
 * Just enough ELF64 to boot a PVH kernel: its loadable segments and the Xen PVH entry note.
 * The image is input like any other: every offset and size is checked before use.
 */
import { SnowflockError } from "../errors.ts";

export interface LoadSegment {
  physicalAddress: number;
  /** File bytes; the rest of memorySize is zero. */
  data: Uint8Array;
  memorySize: number;
}

export interface KernelImage {
  segments: LoadSegment[];
  /** 32-bit PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY). */
  pvhEntry: number;
}

const PT_LOAD = 1;
const PT_NOTE = 4;
const XEN_ELFNOTE_PHYS32_ENTRY = 18;

function bad(why: string): never {
  throw new SnowflockError("GUEST_IMAGE", `guest image is not a bootable PVH ELF: ${why}`);
}

export function parseKernelImage(image: Uint8Array): KernelImage {
  if (image.byteLength < 64) bad("too short for an ELF header");
  const v = new DataView(image.buffer, image.byteOffset, image.byteLength);
  if (v.getUint32(0, false) !== 0x7f454c46) bad("no ELF magic");
  if (v.getUint8(4) !== 2 || v.getUint8(5) !== 1) bad("not a little-endian ELF64 file");
  if (v.getUint16(18, true) !== 62) bad("not an x86-64 image");
  const phoff = Number(v.getBigUint64(32, true));
  const phentsize = v.getUint16(54, true);
  const phnum = v.getUint16(56, true);
  if (phentsize < 56 || phoff + phnum * phentsize > image.byteLength) bad("program headers out of bounds");

  const segments: LoadSegment[] = [];
  let pvhEntry: number | undefined;
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    const type = v.getUint32(at, true);
    const offset = Number(v.getBigUint64(at + 8, true));
    const paddr = Number(v.getBigUint64(at + 24, true));
    const filesz = Number(v.getBigUint64(at + 32, true));
    const memsz = Number(v.getBigUint64(at + 40, true));
    if (type !== PT_LOAD && type !== PT_NOTE) continue;
    if (offset + filesz > image.byteLength || (type === PT_LOAD && filesz > memsz)) bad(`segment ${i} out of bounds`);
    if (type === PT_LOAD) segments.push({ physicalAddress: paddr, data: image.subarray(offset, offset + filesz), memorySize: memsz });
    else pvhEntry ??= findPvhEntry(v, offset, filesz);
  }
  if (segments.length === 0) bad("no loadable segments");
  if (pvhEntry === undefined) bad("no XEN_ELFNOTE_PHYS32_ENTRY note");
  return { segments, pvhEntry };
}

function findPvhEntry(v: DataView, start: number, size: number): number | undefined {
  const align4 = (n: number) => (n + 3) & ~3;
  let at = start;
  while (at + 12 <= start + size) {
    const namesz = v.getUint32(at, true);
    const descsz = v.getUint32(at + 4, true);
    const type = v.getUint32(at + 8, true);
    const nameAt = at + 12;
    const descAt = nameAt + align4(namesz);
    if (descAt + descsz > start + size) return undefined;
    const name = new TextDecoder().decode(new Uint8Array(v.buffer, v.byteOffset + nameAt, Math.max(0, namesz - 1)));
    if (name === "Xen" && type === XEN_ELFNOTE_PHYS32_ENTRY && descsz >= 4) return v.getUint32(descAt, true);
    at = descAt + align4(descsz);
  }
  return undefined;
}
