/**
 * Mapping another domain's pages into this process (libxenforeignmemory): the page copy between
 * a parent and its clones will go through it. Written to xenforeignmemory.h; it can only be
 * exercised in a dom0 with a running domain (test/xen).
 */
import { toArrayBuffer } from "bun:ffi";
import { SyscallError } from "../../sys/errno.ts";
import { lastErrno } from "../../sys/libc.ts";
import { XC_PAGE_SIZE, type XenReleaseAbi } from "./abi.ts";
import { type NativePointer, xenLibrary, type XenSymbols } from "./libs.ts";

export interface ForeignMapping {
  /** Where the pages start in this process; read them with bun:ffi's toArrayBuffer. */
  address: NativePointer;
  pages: number;
  /** Per page: 0, or the negative errno Xen gave for it (e.g. -ENOENT for a gfn with no page). */
  errors: Int32Array;
}

/** Frame numbers first, first + 1, ..., first + count - 1. */
export function frameRun(first: number, count: number): BigUint64Array {
  const frames = new BigUint64Array(count);
  for (let i = 0; i < count; i++) frames[i] = BigInt(first + i);
  return frames;
}

/** Maps `frames` of `domid`, hands `use` their bytes (page i at i * XC_PAGE_SIZE) and per-page errors, then unmaps them. */
export function withMapped<T>(
  memory: Pick<ForeignMemory, "map" | "unmap">,
  domid: number,
  prot: number,
  frames: BigUint64Array,
  use: (bytes: Buffer, errors: Int32Array) => T,
): T {
  const mapping = memory.map(domid, prot, frames);
  try {
    return use(Buffer.from(toArrayBuffer(mapping.address as never, 0, frames.length * XC_PAGE_SIZE)), mapping.errors);
  } finally {
    memory.unmap(mapping);
  }
}

export class ForeignMemory {
  private constructor(
    private handle: NativePointer | null,
    private readonly fm: XenSymbols<"xenforeignmemory">,
  ) {}

  /** `logger` is an xentoollog_logger* (null: the library's own, which prints to stderr). */
  static open(abi: XenReleaseAbi, logger: NativePointer | null): ForeignMemory {
    const fm = xenLibrary("xenforeignmemory", abi);
    const handle = fm.xenforeignmemory_open(logger, 0);
    if (handle === null) throw new SyscallError("xenforeignmemory_open", lastErrno());
    return new ForeignMemory(handle, fm);
  }

  /** Maps `frames` (guest frame numbers of domain `domid`) contiguously, with PROT_* `prot`. */
  map(domid: number, prot: number, frames: BigUint64Array): ForeignMapping {
    const errors = new Int32Array(frames.length);
    const address = this.fm.xenforeignmemory_map(this.live(), domid, prot, frames.length, frames, errors);
    if (address === null) throw new SyscallError("xenforeignmemory_map", lastErrno(), `${frames.length} pages of domain ${domid}`);
    return { address, pages: frames.length, errors };
  }

  unmap(mapping: ForeignMapping): void {
    if (this.fm.xenforeignmemory_unmap(this.live(), mapping.address, mapping.pages) < 0) {
      throw new SyscallError("xenforeignmemory_unmap", lastErrno(), `${mapping.pages * XC_PAGE_SIZE} bytes`);
    }
  }

  close(): void {
    if (this.handle !== null) this.fm.xenforeignmemory_close(this.handle);
    this.handle = null;
  }

  private live(): NativePointer {
    if (this.handle === null) throw new Error("ForeignMemory used after close()");
    return this.handle;
  }
}
