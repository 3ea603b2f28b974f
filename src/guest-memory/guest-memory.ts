/**
 * Guest RAM backed by one memfd, mapped shared into this process. A memfd (not anonymous memory)
 * so that a clone round can freeze it: the memfd becomes a read-only image that clones map
 * copy-on-write, and this process moves onto a private mapping of it.
 */
import { isZeroPage } from "./zero-page.ts";
import {
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_NORESERVE,
  MAP_PRIVATE,
  MAP_SHARED,
  MFD_CLOEXEC,
  O_RDONLY,
  PROT_READ,
  PROT_WRITE,
} from "../sys/constants.ts";
import { close, ftruncate, memfdCreate, open, pwrite } from "../sys/files.ts";
import { mincore, mmap, munmap, view } from "../sys/memory.ts";
import { dataRanges } from "../sys/data-ranges.ts";
import { heldPages } from "../sys/pagemap.ts";
import { PageBitmap } from "../wasm/page-bitmap.ts";
import { type MemoryLayout, memoryLayout, PAGE_SIZE, translate } from "./layout.ts";

export class GuestMemory {
  readonly bytes: Uint8Array;

  private constructor(
    readonly layout: MemoryLayout,
    /** Host address of the mapping; valid in every thread of this process. */
    readonly address: number,
    /** The file behind the mapping, which this memory owns (closed with it): the memfd, or (copy-on-write) its frozen image; -1 for anonymous memory or an attached view. */
    private fd: number,
    /** Private: writes stay in this process; the backing file is a frozen image. */
    private copyOnWrite = false,
    /** False for a view attached from another thread: close() leaves the mapping alone. */
    private readonly owner = true,
  ) {
    this.bytes = view(address, layout.size);
  }

  /**
   * Clone memory: a copy-on-write mapping of a frozen image (e.g. /proc/PID/fd/N of a parent's
   * memfd). Nothing is copied until the clone writes.
   */
  static openImage(path: string, layout: MemoryLayout): GuestMemory {
    const fd = open(path, O_RDONLY);
    try {
      return new GuestMemory(layout, mmap(0, layout.size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0), fd, true);
    } catch (error) {
      close(fd);
      throw error;
    }
  }

  /**
   * Freezes the current contents as an image other processes can map, and moves this mapping
   * onto a private copy-on-write mapping of it, in place (same address, so vCPU threads and KVM's
   * memory slots need no update: KVM drops its old translations through its MMU notifier).
   * The first time, the memfd itself becomes the image; later, a new image is written from the
   * current contents (`nonZeroPages`: a bitmap of the pages to write, when the caller has just found them). Returns
   * the image's fd, which the caller now owns (and closes when every clone has opened the image).
   * Call only while every vCPU is paused.
   */
  freeze(nonZeroPages?: Uint8Array, name = "snowflock-image"): number {
    let image = this.fd;
    if (this.copyOnWrite) {
      image = memfdCreate(name, MFD_CLOEXEC);
      ftruncate(image, this.size);
      using pages = nonZeroPages ? PageBitmap.fromBytes(nonZeroPages, this.size / PAGE_SIZE) : this.nonZeroPages();
      for (const [start, count] of pages.runs()) {
        pwrite(image, this.bytes.subarray(start * PAGE_SIZE, (start + count) * PAGE_SIZE), start * PAGE_SIZE);
      }
    }
    mmap(this.address, this.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, image, 0);
    // A description of its own onto the image (the caller closes `image`): what touchedPages() asks for the pages under the private mapping.
    const backing = open(`/proc/self/fd/${image}`, O_RDONLY);
    if (this.fd >= 0 && this.fd !== image) close(this.fd); // the backing of an earlier freeze or of openImage
    this.fd = backing;
    this.copyOnWrite = true;
    return image;
  }

  /** Fresh zeroed guest memory of `size` bytes. */
  static create(size: number, name = "snowflock-guest"): GuestMemory {
    const layout = memoryLayout(size);
    const fd = memfdCreate(name, MFD_CLOEXEC);
    try {
      ftruncate(fd, size);
      return new GuestMemory(layout, mmap(0, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), fd);
    } catch (error) {
      close(fd);
      throw error;
    }
  }

  /**
   * Memory with nothing in it yet, to be filled on demand through userfaultfd (which needs
   * anonymous memory): a private anonymous mapping that reserves no swap for pages never filled.
   * Copy-on-write with no backing file, so freeze() writes a real image from the contents.
   */
  static createEmpty(layout: MemoryLayout): GuestMemory {
    return new GuestMemory(
      layout,
      mmap(0, layout.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0),
      -1,
      true,
    );
  }

  /** The same memory seen from another thread (a vCPU Worker); it does not own the mapping. */
  static attach(layout: MemoryLayout, address: number): GuestMemory {
    return new GuestMemory(layout, address, -1, false, false);
  }

  /** A new memory with the same layout and a copy of every byte of `source`. */
  static copyOf(source: GuestMemory, name = "snowflock-guest"): GuestMemory {
    const copy = GuestMemory.create(source.size, name);
    copy.bytes.set(source.bytes);
    return copy;
  }

  get size(): number {
    return this.layout.size;
  }

  /**
   * A view of guest range [address, address+length), or undefined if the guest named memory it
   * does not have. Every guest-supplied pointer goes through here.
   */
  guestRange(address: bigint, length: bigint): Uint8Array | undefined {
    const offset = translate(this.layout, address, length);
    return offset === undefined ? undefined : this.bytes.subarray(offset, offset + Number(length));
  }

  /**
   * Pages that have been touched. A memfd's pages are its data ranges (asking the memfd is far
   * quicker than mincore, which looks up every page of a file mapping: ~9 ms for 1 GiB, and this
   * runs while a parent is paused); a private mapping of an image adds the pages this process
   * holds of its own (pagemap); anonymous memory has no file behind it, where mincore is quick.
   */
  touchedPages(): PageBitmap {
    const resident = () => PageBitmap.fromMincore(mincore(this.address, this.size, PAGE_SIZE));
    if (this.fd < 0) return resident();
    let pages: PageBitmap;
    try {
      pages = this.copyOnWrite
        ? PageBitmap.fromMincore(heldPages(this.address, this.size, PAGE_SIZE))
        : new PageBitmap(this.size / PAGE_SIZE);
    } catch {
      return resident(); // no pagemap to read (a restricted /proc): the slow look, which sees the image's pages too
    }
    for (const [offset, length] of dataRanges(this.fd, this.size)) pages.set(offset / PAGE_SIZE, Math.ceil(length / PAGE_SIZE));
    return pages;
  }

  /** Pages that may hold something other than zeros: touched, and not all zero when looked at. */
  nonZeroPages(): PageBitmap {
    const pages = this.touchedPages();
    for (let page = pages.nextSet(0); page >= 0; page = pages.nextSet(page + 1)) {
      if (isZeroPage(this.bytes, page)) pages.clear(page);
    }
    return pages;
  }

  close(): void {
    if (!this.owner) return;
    munmap(this.address, this.size);
    if (this.fd >= 0) close(this.fd);
  }
}
