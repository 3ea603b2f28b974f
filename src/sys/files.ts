import { lastErrno, libc } from "./libc.ts";
import { check } from "./check.ts";
import { EINTR, O_CLOEXEC } from "./constants.ts";

const encoder = new TextEncoder();
const cstring = (s: string) => encoder.encode(`${s}\0`);

export function open(path: string, flags: number, mode = 0o600): number {
  return check("open", libc.open(cstring(path), flags | O_CLOEXEC, mode), path);
}

export function close(fd: number): void {
  check("close", libc.close(fd));
}

export function dup2(fd: number, target: number): void {
  check("dup2", libc.dup2(fd, target));
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

export function lseek(fd: number, offset: number, whence: number): number {
  return check("lseek", libc.lseek(fd, offset, whence) as number);
}

/** copy_file_range(2) between explicit offsets; returns the bytes copied (0 at the source's end). */
export function copyFileRange(source: number, sourceOffset: number, target: number, targetOffset: number, length: number): number {
  const from = new BigInt64Array([BigInt(sourceOffset)]);
  const to = new BigInt64Array([BigInt(targetOffset)]);
  return check("copy_file_range", libc.copy_file_range(source, from, target, to, length, 0) as number);
}

export function fallocate(fd: number, mode: number, offset: number, length: number): void {
  check("fallocate", libc.fallocate(fd, mode, offset, length));
}

/** flock(2) on an open file (LOCK_EX, LOCK_UN...); a blocking lock is taken again when a signal interrupts it. */
export function flock(fd: number, operation: number): void {
  for (;;) {
    const result = libc.flock(fd, operation);
    if (result === 0) return;
    if (lastErrno() !== EINTR) check("flock", result);
  }
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

/** poll(2)'s table, reused: a receive loop polls once per frame or so, and each thread has its own. */
let pollTable = new Uint8Array(64);
let pollView = new DataView(pollTable.buffer);

/** poll(2) over a few descriptors; returns the revents of each, in order. */
export function poll(requests: PollRequest[], timeoutMs: number): number[] {
  if (8 * requests.length > pollTable.byteLength) {
    pollTable = new Uint8Array(8 * requests.length);
    pollView = new DataView(pollTable.buffer);
  }
  for (let i = 0; i < requests.length; i++) {
    pollView.setInt32(i * 8, requests[i]!.fd, true);
    pollView.setInt16(i * 8 + 4, requests[i]!.events, true);
    pollView.setInt16(i * 8 + 6, 0, true);
  }
  check("poll", libc.poll(pollTable, requests.length, timeoutMs));
  const revents = new Array<number>(requests.length);
  for (let i = 0; i < requests.length; i++) revents[i] = pollView.getInt16(i * 8 + 6, true);
  return revents;
}
