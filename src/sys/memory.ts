import { toArrayBuffer } from "bun:ffi";
import { libc } from "./libc.ts";
import { check } from "./check.ts";

export function mmap(address: number, length: number, prot: number, flags: number, fd: number, offset: number): number {
  return check("mmap", libc.mmap(address, length, prot, flags, fd, offset) as number, `${length} bytes`);
}

export function munmap(address: number, length: number): void {
  check("munmap", libc.munmap(address, length));
}

export function mprotect(address: number, length: number, prot: number): void {
  check("mprotect", libc.mprotect(address, length, prot));
}

export function madvise(address: number, length: number, advice: number): void {
  check("madvise", libc.madvise(address, length, advice));
}

/** mincore(2): one byte per page, bit 0 set when the page is resident. */
export function mincore(address: number, length: number, pageSize = 4096): Uint8Array {
  const vector = new Uint8Array(Math.ceil(length / pageSize));
  check("mincore", libc.mincore(address, length, vector));
  return vector;
}

/** A byte view of native memory (no copy); valid until the mapping is unmapped. */
export function view(address: number, length: number): Uint8Array {
  return new Uint8Array(toArrayBuffer(address as never, 0, length));
}
