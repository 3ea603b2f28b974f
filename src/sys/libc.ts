import { dlopen, FFIType as T, read } from "bun:ffi";

/**
 * The libc symbols snowflock calls. Loaded once per thread (each Worker has its own module
 * instance). Pointer-sized results that can be -1 are declared i64_fast so MAP_FAILED stays exact.
 */
const library = dlopen("libc.so.6", {
  open: { args: [T.cstring, T.i32, T.u32], returns: T.i32 },
  close: { args: [T.i32], returns: T.i32 },
  dup2: { args: [T.i32, T.i32], returns: T.i32 },
  read: { args: [T.i32, T.ptr, T.u64], returns: T.i64_fast },
  write: { args: [T.i32, T.ptr, T.u64], returns: T.i64_fast },
  pread: { args: [T.i32, T.ptr, T.u64, T.i64], returns: T.i64_fast },
  pwrite: { args: [T.i32, T.ptr, T.u64, T.i64], returns: T.i64_fast },
  ftruncate: { args: [T.i32, T.i64], returns: T.i32 },
  lseek: { args: [T.i32, T.i64, T.i32], returns: T.i64_fast },
  copy_file_range: { args: [T.i32, T.ptr, T.i32, T.ptr, T.u64, T.u32], returns: T.i64_fast },
  fallocate: { args: [T.i32, T.i32, T.i64, T.i64], returns: T.i32 },
  flock: { args: [T.i32, T.i32], returns: T.i32 },
  ioctl: { args: [T.i32, T.u64, T.u64], returns: T.i32 },
  mmap: { args: [T.u64, T.u64, T.i32, T.i32, T.i32, T.i64], returns: T.i64_fast },
  munmap: { args: [T.u64, T.u64], returns: T.i32 },
  mprotect: { args: [T.u64, T.u64, T.i32], returns: T.i32 },
  madvise: { args: [T.u64, T.u64, T.i32], returns: T.i32 },
  mincore: { args: [T.u64, T.u64, T.ptr], returns: T.i32 },
  memfd_create: { args: [T.cstring, T.u32], returns: T.i32 },
  eventfd: { args: [T.u32, T.i32], returns: T.i32 },
  poll: { args: [T.ptr, T.u64, T.i32], returns: T.i32 },
  socket: { args: [T.i32, T.i32, T.i32], returns: T.i32 },
  connect: { args: [T.i32, T.ptr, T.u32], returns: T.i32 },
  send: { args: [T.i32, T.ptr, T.u64, T.i32], returns: T.i64_fast },
  bind: { args: [T.i32, T.ptr, T.u32], returns: T.i32 },
  sendto: { args: [T.i32, T.ptr, T.u64, T.i32, T.ptr, T.u32], returns: T.i64_fast },
  recvfrom: { args: [T.i32, T.ptr, T.u64, T.i32, T.ptr, T.ptr], returns: T.i64_fast },
  if_nametoindex: { args: [T.cstring], returns: T.u32 },
  setsockopt: { args: [T.i32, T.i32, T.i32, T.ptr, T.u32], returns: T.i32 },
  getsockopt: { args: [T.i32, T.i32, T.i32, T.ptr, T.ptr], returns: T.i32 },
  syscall: { args: [T.i64, T.i64, T.i64, T.i64, T.i64, T.i64, T.i64], returns: T.i64_fast },
  sigaction: { args: [T.i32, T.ptr, T.ptr], returns: T.i32 },
  getpid: { args: [], returns: T.i32 },
  clock_gettime: { args: [T.i32, T.ptr], returns: T.i32 },
  __errno_location: { args: [], returns: T.ptr },
});

export const libc = library.symbols;

/** errno of the calling thread, read right after the failing call. */
export function lastErrno(): number {
  const location = libc.__errno_location();
  return location === null ? 0 : read.i32(location, 0);
}
