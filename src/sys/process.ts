import { ptr } from "bun:ffi";
import { libc } from "./libc.ts";
import { check } from "./check.ts";
import { CLOCK_THREAD_CPUTIME_ID, SYS_gettid, SYS_tgkill } from "./constants.ts";

export function getpid(): number {
  return libc.getpid();
}

/** The path another process (a clone's VMM) or a Worker opens to reach this process's open `fd`. */
export function ownFdPath(fd: number): string {
  return `/proc/${getpid()}/fd/${fd}`;
}

/** The kernel thread id of the calling thread (each Bun Worker runs on its own thread). */
export function gettid(): number {
  return check("gettid", libc.syscall(SYS_gettid, 0, 0, 0, 0, 0, 0) as number);
}

export function tgkill(pid: number, tid: number, signal: number): void {
  check("tgkill", libc.syscall(SYS_tgkill, pid, tid, signal, 0, 0, 0) as number, `tid ${tid}`);
}

/** Raw syscall(2) for calls libc has no wrapper for. */
export function syscall(nr: number, ...args: number[]): number {
  const a = [...args, 0, 0, 0, 0, 0, 0];
  return check(`syscall ${nr}`, libc.syscall(nr, a[0]!, a[1]!, a[2]!, a[3]!, a[4]!, a[5]!) as number);
}

/**
 * sigaction(2) with a handler address. glibc's struct sigaction on x86-64: handler (8), mask
 * (128), flags (4, padded to 8), restorer (8) — glibc fills in the restorer itself.
 */
export function sigaction(signal: number, handler: number, flags: number): void {
  const action = new DataView(new ArrayBuffer(152));
  action.setBigUint64(0, BigInt(handler), true);
  action.setInt32(136, flags, true);
  check("sigaction", libc.sigaction(signal, ptr(action), null), `signal ${signal}`);
}

/** struct timespec: tv_sec, tv_nsec (one per thread: each Worker has its own module instance). */
const timespec = new BigInt64Array(2);

/** The CPU time the calling thread has run, in µs (CLOCK_THREAD_CPUTIME_ID). */
export function threadCpuMicros(): number {
  check("clock_gettime", libc.clock_gettime(CLOCK_THREAD_CPUTIME_ID, timespec), "CLOCK_THREAD_CPUTIME_ID");
  return Number(timespec[0]) * 1e6 + Number(timespec[1]) / 1e3;
}
