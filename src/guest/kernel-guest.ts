/**
 * A guest the user brings: a kernel file (a Linux bzImage, or an ELF with a PVH entry such as a
 * vmlinux), an optional initrd and the kernel's command line. Read and checked before anything
 * starts, so that a wrong path or a file that is not a kernel is one clear line.
 */
import { basename } from "node:path";
import { readRegularFile } from "../bounded-read.ts";
import { SnowflockError } from "../errors.ts";
import { type BzImage, looksLikeBzImage, parseBzImage } from "./bzimage.ts";
import { type KernelImage, parseKernelImage } from "./elf.ts";

/** What the user named: paths and the command line. */
export interface KernelGuestFiles {
  kernel: string;
  initrd?: string;
  cmdline: string;
}

export type ParsedKernel = { kind: "linux"; image: BzImage } | { kind: "pvh"; image: KernelImage };

export interface KernelGuest {
  files: KernelGuestFiles;
  image: Uint8Array;
  kernel: ParsedKernel;
  initrd?: Uint8Array;
}

/** A serial console, reboot through the keyboard controller (the VM's end) and no PCI bus (there is none). */
export const DEFAULT_KERNEL_CMDLINE = "console=ttyS0 reboot=k panic=-1 pci=off quiet";

/** Larger than any kernel or initramfs worth booting, small enough to refuse a disk image given by mistake. */
const MAX_KERNEL_BYTES = 256 * 2 ** 20;
const MAX_INITRD_BYTES = 2 * 2 ** 30;

/** A bzImage through the Linux boot protocol, else an ELF through its PVH entry; neither is refused. */
export function parseKernel(image: Uint8Array): ParsedKernel {
  if (looksLikeBzImage(image)) return { kind: "linux", image: parseBzImage(image) };
  if (image.byteLength >= 4 && new DataView(image.buffer, image.byteOffset).getUint32(0, false) === 0x7f454c46)
    return { kind: "pvh", image: parseKernelImage(image) };
  throw new SnowflockError(
    "GUEST_IMAGE",
    "not a kernel: neither a Linux bzImage (no boot sector with 'HdrS') nor an ELF file",
    "give a bzImage (e.g. /boot/vmlinuz-*) or a vmlinux with a PVH entry",
  );
}

/** Reads and checks the kernel and the initrd. */
export function readKernelGuest(files: KernelGuestFiles): KernelGuest {
  const image = readRegularFile(files.kernel, { what: "kernel", maxBytes: MAX_KERNEL_BYTES, code: "GUEST_IMAGE" });
  let kernel: ParsedKernel;
  try {
    kernel = parseKernel(image);
  } catch (error) {
    if (error instanceof SnowflockError) throw new SnowflockError(error.code, `${files.kernel}: ${error.message}`, error.hint);
    throw error;
  }
  if (files.initrd === undefined) return { files, image, kernel };
  if (kernel.kind === "pvh")
    throw new SnowflockError(
      "GUEST_IMAGE",
      `${files.kernel} is a PVH ELF kernel: an initrd goes with a Linux bzImage`,
      "boot the bzImage of the same kernel to give it an initrd",
    );
  const initrd = readRegularFile(files.initrd, { what: "initrd", maxBytes: MAX_INITRD_BYTES, code: "GUEST_IMAGE" });
  return { files, image, kernel, initrd };
}

/** How `ls` and the console name such a guest: the kernel file and its command line. */
export function kernelGuestLabel(files: KernelGuestFiles): string {
  return `${basename(files.kernel)} ${files.cmdline}`;
}
