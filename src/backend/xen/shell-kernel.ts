/**
 * The kernel a clone's domain shell is built with. libxl will only build a PVH domain around a
 * kernel, but a clone never runs it: its memory and vCPU state are overwritten with the parent's
 * before it first runs. So instead of decompressing and loading the parent's multi-megabyte
 * kernel and initramfs once per clone, the shell gets this: the smallest ELF that Xen's domain
 * builder accepts as a PVH kernel (one page of `hlt` at 1 MiB, and the XEN_ELFNOTE_PHYS32_ENTRY
 * note pointing at it).
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const XEN_ELFNOTE_PHYS32_ENTRY = 18;
const LOAD_ADDRESS = 0x100000;
const EHDR = 64;
const PHDR = 56;

export function shellKernelImage(): Uint8Array {
  const note = new Uint8Array(12 + 4 + 4); // namesz, descsz, type; "Xen\0"; the 32-bit entry
  const noteView = new DataView(note.buffer);
  noteView.setUint32(0, 4, true);
  noteView.setUint32(4, 4, true);
  noteView.setUint32(8, XEN_ELFNOTE_PHYS32_ENTRY, true);
  note.set([0x58, 0x65, 0x6e, 0], 12);
  noteView.setUint32(16, LOAD_ADDRESS, true);
  const code = new Uint8Array([0xfa, 0xf4, 0xeb, 0xfd]); // cli; hlt; jmp hlt
  const noteAt = EHDR + 2 * PHDR;
  const codeAt = 0x1000;
  const image = new Uint8Array(codeAt + code.length);
  const v = new DataView(image.buffer);
  image.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], 0); // ELF64, little-endian, version 1
  v.setUint16(16, 2, true); // ET_EXEC
  v.setUint16(18, 62, true); // EM_X86_64
  v.setUint32(20, 1, true);
  v.setBigUint64(24, BigInt(LOAD_ADDRESS), true); // e_entry
  v.setBigUint64(32, BigInt(EHDR), true); // e_phoff
  v.setUint16(52, EHDR, true);
  v.setUint16(54, PHDR, true);
  v.setUint16(56, 2, true); // e_phnum
  const phdr = (index: number, type: number, flags: number, offset: number, address: number, size: number, align: number) => {
    const at = EHDR + index * PHDR;
    v.setUint32(at, type, true);
    v.setUint32(at + 4, flags, true);
    v.setBigUint64(at + 8, BigInt(offset), true);
    v.setBigUint64(at + 16, BigInt(address), true);
    v.setBigUint64(at + 24, BigInt(address), true);
    v.setBigUint64(at + 32, BigInt(size), true);
    v.setBigUint64(at + 40, BigInt(size), true);
    v.setBigUint64(at + 48, BigInt(align), true);
  };
  phdr(0, 1, 5, codeAt, LOAD_ADDRESS, code.length, 0x1000); // PT_LOAD, R+X
  phdr(1, 4, 4, noteAt, 0, note.length, 4); // PT_NOTE
  image.set(note, noteAt);
  image.set(code, codeAt);
  return image;
}

/** The image as a file under `directory` (written once), for libxl's b_info.kernel. */
export function shellKernelPath(directory: string): string {
  const path = join(directory, "xen-clone-shell.elf");
  const image = shellKernelImage();
  let current: Uint8Array | undefined;
  try {
    current = readFileSync(path);
  } catch {
    current = undefined;
  }
  if (!current || Buffer.compare(current, image) !== 0) {
    mkdirSync(directory, { recursive: true });
    writeFileSync(path, image, { mode: 0o644 });
  }
  return path;
}
