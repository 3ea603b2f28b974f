/**
 * A page source for a clone on its parent's host: the parent's frozen image itself
 * (/proc/PID/fd/N, as a copy-on-write clone maps it), read through a read-only shared mapping.
 * A fault costs a copy and no round trip, and the parent's event loop serves nothing, so N
 * clones starting at once do not queue behind one server. The clone holds the image open from
 * its start, so a parent that ends later takes nothing from it.
 */
import { fstatSync } from "node:fs";
import { SnowflockError } from "../errors.ts";
import { MAP_SHARED, O_CLOEXEC, O_RDONLY, PROT_READ } from "../sys/constants.ts";
import { close, open } from "../sys/files.ts";
import { mmap, munmap, view } from "../sys/memory.ts";
import { PAGE_SIZE } from "../guest-memory/layout.ts";

/**
 * Maps `bytes` of the frozen image open on `fd`, read-only and shared (the memory server's and the
 * image source's view of it); `what` names the image in the refusal of one shorter than the guest.
 */
export function mapImage(fd: number, bytes: number, what: string): number {
  const has = fstatSync(fd).size;
  if (has < bytes) throw new SnowflockError("MEMORY", `${what} has ${has} bytes, the guest has ${bytes}`);
  return mmap(0, bytes, PROT_READ, MAP_SHARED, fd, 0);
}

/** A PageSource (page-source.ts), as PageClient is one. */
export class ImageSource {
  /** Nothing arrives unasked: poll skips a negative fd. */
  readonly fd = -1;
  private readonly image: Uint8Array;
  private bytesCopied = 0;

  private constructor(
    private readonly imageFd: number,
    private readonly address: number,
    private readonly size: number,
  ) {
    this.image = view(address, size);
  }

  /** Opens and maps the image at `path`, which must hold `pageCount` pages. */
  static open(path: string, pageCount: number): ImageSource {
    let fd: number;
    try {
      fd = open(path, O_RDONLY | O_CLOEXEC);
    } catch (error) {
      throw new SnowflockError(
        "MEMORY",
        `cannot open the frozen image at ${path}: ${(error as Error).message}`,
        "is the parent VM still running?",
      );
    }
    const size = pageCount * PAGE_SIZE;
    try {
      return new ImageSource(fd, mapImage(fd, size, `the frozen image at ${path}`), size);
    } catch (error) {
      close(fd);
      throw error;
    }
  }

  fetch(pages: number[]): Uint8Array[] {
    this.bytesCopied += pages.length * PAGE_SIZE;
    return pages.map((page) => this.image.subarray(page * PAGE_SIZE, (page + 1) * PAGE_SIZE));
  }

  idle(): void {}

  /** The pages' bytes: nothing else crosses between parent and clone. */
  bytesReceived(): number {
    return this.bytesCopied;
  }

  close(): void {
    munmap(this.address, this.size);
    close(this.imageFd);
  }
}
