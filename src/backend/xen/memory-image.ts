/**
 * A domain's RAM copied into a memfd: the frozen image a memory server serves to clones (backing
 * page i = guest frame i). Read through foreign mappings, a batch of frames at a time, while the
 * domain is paused or suspended; zero pages end as the memfd's holes and are marked in the bitmap.
 */
import {
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  MAP_POPULATE,
  MAP_SHARED,
  MFD_CLOEXEC,
  PROT_READ,
  PROT_WRITE,
} from "../../sys/constants.ts";
import { mmap, munmap, view } from "../../sys/memory.ts";
import { memoryLayout, translate } from "../../guest-memory/layout.ts";
import type { PhysicalMemory } from "../../guest-memory/page-walk.ts";
import { close, fallocate, ftruncate, memfdCreate } from "../../sys/files.ts";
import { SyscallError } from "../../sys/errno.ts";
import { isZeroPage } from "../../guest-memory/zero-page.ts";
import { XC_PAGE_SIZE } from "./abi.ts";
import { type ForeignMemory, frameRun, withMapped } from "./foreign-memory.ts";
import { COPY_BATCH } from "./page-copy.ts";
import { hasPage } from "../../guest-memory/page-bits.ts";

export interface MemoryImage {
  /** The memfd; the caller closes it. */
  fd: number;
  pages: number;
  /** Bit i (byte i>>3, bit i&7) set: frame i holds data. */
  nonZeroPages: Uint8Array;
  zeroPages: number;
}

/** One part of an image: which of its frames hold data (bits of the whole image's bitmap), and how many were zero. */
export interface ImagePart {
  nonZeroPages: Uint8Array;
  zeroPages: number;
}

/**
 * The memfd an image is copied into, mapped whole with its pages allocated before the parent
 * stops: a PV dom0 pays a hypercall for each page it first touches, which tripled the copy.
 */
export interface ImageFile {
  fd: number;
  pages: number;
  /** Where the whole file is mapped in this process (its threads share it). */
  address: number;
}

export function createImageFile(name: string, pages: number): ImageFile {
  const fd = memfdCreate(name, MFD_CLOEXEC);
  try {
    ftruncate(fd, pages * XC_PAGE_SIZE);
    return { fd, pages, address: mmap(0, pages * XC_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0) };
  } catch (error) {
    close(fd);
    throw error;
  }
}

/** Ends an image file that will not be used (its mapping and fd). */
export function discardImageFile(file: ImageFile): void {
  munmap(file.address, file.pages * XC_PAGE_SIZE);
  close(file.fd);
}

/**
 * Copies frames [first, first + count) of domain `domid` into `file`; every one must be populated
 * (RAM). Parts of one image may be copied on several threads.
 */
export function captureImagePart(
  memory: ForeignMemory,
  domid: number,
  file: Pick<ImageFile, "pages" | "address">,
  first: number,
  count: number,
): ImagePart {
  const nonZeroPages = new Uint8Array(Math.ceil(file.pages / 8));
  let zeroPages = 0;
  const image = view(file.address, file.pages * XC_PAGE_SIZE);
  for (let batch = first; batch < first + count; batch += COPY_BATCH) {
    const size = Math.min(COPY_BATCH, first + count - batch);
    withMapped(memory, domid, PROT_READ, frameRun(batch, size), (bytes, errors) => {
      for (let i = 0; i < size; i++) {
        const frame = batch + i;
        if (errors[i] !== 0) throw new SyscallError("xenforeignmemory_map", -errors[i]!, `domain ${domid} frame 0x${frame.toString(16)}`);
        if (isZeroPage(bytes, i)) {
          zeroPages++;
          continue;
        }
        nonZeroPages[frame >> 3]! |= 1 << (frame & 7);
        image.set(bytes.subarray(i * XC_PAGE_SIZE, (i + 1) * XC_PAGE_SIZE), frame * XC_PAGE_SIZE);
      }
    });
  }
  return { nonZeroPages, zeroPages };
}

/** Frame ranges for `parts` threads: whole copy batches each, the last one shorter. */
export function imageParts(pages: number, parts: number): Array<{ first: number; count: number }> {
  const per = Math.ceil(Math.ceil(pages / COPY_BATCH) / Math.max(1, parts)) * COPY_BATCH;
  const ranges: Array<{ first: number; count: number }> = [];
  for (let first = 0; first < pages; first += per) ranges.push({ first, count: Math.min(per, pages - first) });
  return ranges;
}

/** The image made of its parts' copies. */
export function joinImageParts(file: ImageFile, parts: ImagePart[]): MemoryImage {
  const nonZeroPages = new Uint8Array(Math.ceil(file.pages / 8));
  for (const part of parts) for (let i = 0; i < nonZeroPages.length; i++) nonZeroPages[i]! |= part.nonZeroPages[i]!;
  return { fd: file.fd, pages: file.pages, nonZeroPages, zeroPages: parts.reduce((n, part) => n + part.zeroPages, 0) };
}

/**
 * Once the clones run: the zero pages' memory goes back (holes in the file, read as zeros) and the
 * mapping goes; the fd stays for the memory server.
 */
export function trimImageFile(file: ImageFile, nonZeroPages: Uint8Array): void {
  const isZero = (frame: number) => !hasPage(nonZeroPages, frame);
  try {
    for (let frame = 0; frame < file.pages; ) {
      if (!isZero(frame)) {
        frame++;
        continue;
      }
      let end = frame + 1;
      while (end < file.pages && isZero(end)) end++;
      fallocate(file.fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, frame * XC_PAGE_SIZE, (end - frame) * XC_PAGE_SIZE);
      frame = end;
    }
  } finally {
    munmap(file.address, file.pages * XC_PAGE_SIZE);
  }
}

/** Copies frames [0, pages) of domain `domid` on this thread; every one must be populated (RAM). */
export function captureImage(memory: ForeignMemory, domid: number, pages: number, name: string): MemoryImage {
  const file = createImageFile(name, pages);
  try {
    const image = joinImageParts(file, [captureImagePart(memory, domid, file, 0, pages)]);
    trimImageFile(file, image.nonZeroPages);
    return image;
  } catch (error) {
    discardImageFile(file);
    throw error;
  }
}

/** The image read as guest-physical memory (for the page walks of eagerFrames), through the file's own mapping. */
export function imageView(file: ImageFile): PhysicalMemory {
  const size = file.pages * XC_PAGE_SIZE;
  const bytes = view(file.address, size);
  const layout = memoryLayout(size);
  return {
    layout,
    guestRange(start, length) {
      const offset = translate(layout, start, length);
      return offset === undefined ? undefined : bytes.subarray(offset, offset + Number(length));
    },
  };
}

/** The bytes of `frames` in the image (copies, kept after the file is trimmed or closed), by frame. */
export function imagePages(file: ImageFile, frames: number[]): Map<number, Uint8Array> {
  const view = imageView(file);
  const pages = new Map<number, Uint8Array>();
  for (const frame of frames) {
    const bytes = view.guestRange(BigInt(frame * XC_PAGE_SIZE), BigInt(XC_PAGE_SIZE));
    if (bytes) pages.set(frame, bytes.slice());
  }
  return pages;
}
