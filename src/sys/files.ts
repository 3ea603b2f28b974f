import { ptr } from "bun:ffi";
import { libc } from "./libc.ts";
import { check } from "./check.ts";
import { O_CLOEXEC } from "./constants.ts";

const encoder = new TextEncoder();
const cstring = (s: string) => encoder.encode(`${s}\0`);

export function open(path: string, flags: number, mode = 0o600): number {
  return check("open", libc.open(cstring(path), flags | O_CLOEXEC, mode), path);
}

export function close(fd: number): void {
  check("close", libc.close(fd));
}

export function read(fd: number, buffer: Uint8Array): number {
  return check("read", libc.read(fd, buffer, buffer.byteLength) as number);
}

export function write(fd: number, buffer: Uint8Array): number {
  return check("write", libc.write(fd, buffer, buffer.byteLength) as number);
}

export function pread(fd: number, buffer: Uint8Array, offset: number): number {
  return check("pread", libc.pread(fd, buffer, buffer.byteLength, offset) as number);
}

export function pwrite(fd: number, buffer: Uint8Array, offset: number): number {
  return check("pwrite", libc.pwrite(fd, buffer, buffer.byteLength, offset) as number);
}

export function ftruncate(fd: number, length: number): void {
  check("ftruncate", libc.ftruncate(fd, length));
}

export function memfdCreate(name: string, flags: number): number {
  return check("memfd_create", libc.memfd_create(cstring(name), flags), name);
}

export function eventfd(initial: number, flags: number): number {
  return check("eventfd", libc.eventfd(initial, flags));
}

export interface PollRequest {
  fd: number;
  events: number;
}

/** poll(2) over a few descriptors; returns the revents of each, in order. */
export function poll(requests: PollRequest[], timeoutMs: number): number[] {
  const table = new DataView(new ArrayBuffer(8 * requests.length));
  requests.forEach((r, i) => {
    table.setInt32(i * 8, r.fd, true);
    table.setInt16(i * 8 + 4, r.events, true);
  });
  check("poll", libc.poll(ptr(table), requests.length, timeoutMs));
  return requests.map((_, i) => table.getInt16(i * 8 + 6, true));
}
