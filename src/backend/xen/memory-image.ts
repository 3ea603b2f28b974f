/**
 * A domain's RAM copied into a memfd: the frozen image a memory server serves to clones (backing
 * page i = guest frame i). Read through foreign mappings, a batch of frames at a time, while the
 * domain is paused or suspended; zero pages are left as the memfd's holes and marked in the bitmap.
 */
import { MAP_SHARED, MFD_CLOEXEC, PROT_READ } from "../../sys/constants.ts";
import { mmap, munmap, view } from "../../sys/memory.ts";
import { memoryLayout, translate } from "../../guest-memory/layout.ts";
import type { PhysicalMemory } from "../../guest-memory/page-walk.ts";
import { close, ftruncate, memfdCreate, pwrite } from "../../sys/files.ts";
import { SyscallError } from "../../sys/errno.ts";
import { isZeroPage } from "../../guest-memory/zero-page.ts";
import { XC_PAGE_SIZE } from "./abi.ts";
import { type ForeignMemory, frameRun, withMapped } from "./foreign-memory.ts";
import { COPY_BATCH } from "./page-copy.ts";

export interface MemoryImage {
  /** The memfd; the caller closes it. */
  fd: number;
  pages: number;
  /** Bit i (byte i>>3, bit i&7) set: frame i holds data. */
  nonZeroPages: Uint8Array;
  zeroPages: number;
}

/** Copies frames [0, pages) of domain `domid`; every one must be populated (RAM). */
export function captureImage(memory: ForeignMemory, domid: number, pages: number, name: string): MemoryImage {
  const fd = memfdCreate(name, MFD_CLOEXEC);
  const nonZeroPages = new Uint8Array(Math.ceil(pages / 8));
  let zeroPages = 0;
  try {
    ftruncate(fd, pages * XC_PAGE_SIZE);
    for (let first = 0; first < pages; first += COPY_BATCH) {
      const count = Math.min(COPY_BATCH, pages - first);
      withMapped(memory, domid, PROT_READ, frameRun(first, count), (bytes, errors) => {
        for (let i = 0; i < count; i++) {
          const frame = first + i;
          if (errors[i] !== 0) throw new SyscallError("xenforeignmemory_map", -errors[i]!, `domain ${domid} frame 0x${frame.toString(16)}`);
          if (isZeroPage(bytes, i)) {
            zeroPages++;
            continue;
          }
          nonZeroPages[frame >> 3]! |= 1 << (frame & 7);
          pwrite(fd, bytes.subarray(i * XC_PAGE_SIZE, (i + 1) * XC_PAGE_SIZE), frame * XC_PAGE_SIZE);
        }
      });
    }
    return { fd, pages, nonZeroPages, zeroPages };
  } catch (error) {
    close(fd);
    throw error;
  }
}

/** The image read as guest-physical memory (for the page walks of eagerFrames), mapped read-only until close(). */
export function imageView(image: MemoryImage): PhysicalMemory & { close(): void } {
  const size = image.pages * XC_PAGE_SIZE;
  const address = mmap(0, size, PROT_READ, MAP_SHARED, image.fd, 0);
  const bytes = view(address, size);
  const layout = memoryLayout(size);
  return {
    layout,
    guestRange(start, length) {
      const offset = translate(layout, start, length);
      return offset === undefined ? undefined : bytes.subarray(offset, offset + Number(length));
    },
    close: () => munmap(address, size),
  };
}
