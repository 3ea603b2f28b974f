/**
 * The userfaultfd ABI (<linux/userfaultfd.h>): ioctl numbers, struct layouts, event and mode bits,
 * and one thin wrapper per ioctl that returns or throws the errno and decides nothing. Each ioctl
 * carries its encoding as a comment; test/unit/uffd-abi.test.ts re-encodes it and compares every
 * number and layout with the header.
 */
import { ptr } from "bun:ffi";
import { check } from "./check.ts";
import { SYS_userfaultfd } from "./constants.ts";
import { ioctl } from "./ioctl.ts";
import { bytes, struct, StructView, u16, u32, u64, u8 } from "./layout.ts";
import { libc } from "./libc.ts";

export const UFFD_API = 0xaa;
export const UFFDIO = 0xaa;

// ---- ioctls on a userfaultfd ----
export const UFFDIO_REGISTER = 0xc020aa00; // _IOWR(UFFDIO, 0x00, struct uffdio_register)
export const UFFDIO_UNREGISTER = 0x8010aa01; // _IOR(UFFDIO, 0x01, struct uffdio_range)
export const UFFDIO_WAKE = 0x8010aa02; // _IOR(UFFDIO, 0x02, struct uffdio_range)
export const UFFDIO_COPY = 0xc028aa03; // _IOWR(UFFDIO, 0x03, struct uffdio_copy)
export const UFFDIO_ZEROPAGE = 0xc020aa04; // _IOWR(UFFDIO, 0x04, struct uffdio_zeropage)
export const UFFDIO_API = 0xc018aa3f; // _IOWR(UFFDIO, 0x3F, struct uffdio_api)

/** Bit numbers of the ioctls in uffdio_api.ioctls / uffdio_register.ioctls. */
export const _UFFDIO_REGISTER = 0x00;
export const _UFFDIO_UNREGISTER = 0x01;
export const _UFFDIO_WAKE = 0x02;
export const _UFFDIO_COPY = 0x03;
export const _UFFDIO_ZEROPAGE = 0x04;
export const _UFFDIO_API = 0x3f;

export const UFFD_EVENT_PAGEFAULT = 0x12;
export const UFFD_EVENT_FORK = 0x13;
export const UFFD_EVENT_REMAP = 0x14;
export const UFFD_EVENT_REMOVE = 0x15;
export const UFFD_EVENT_UNMAP = 0x16;

export const UFFD_PAGEFAULT_FLAG_WRITE = 1 << 0;
export const UFFD_PAGEFAULT_FLAG_WP = 1 << 1;

export const UFFD_FEATURE_THREAD_ID = 1 << 8;

export const UFFDIO_REGISTER_MODE_MISSING = 1 << 0;
export const UFFDIO_COPY_MODE_DONTWAKE = 1 << 0;
export const UFFDIO_ZEROPAGE_MODE_DONTWAKE = 1 << 0;

// ---- structs ----
export const uffd_msg = struct("struct uffd_msg", 32, {
  event: u8(0),
  reserved1: u8(1),
  reserved2: u16(2),
  reserved3: u32(4),
  "arg.pagefault.flags": u64(8),
  "arg.pagefault.address": u64(16),
  "arg.pagefault.feat.ptid": u32(24),
  arg: bytes(8, 24),
});

export const uffdio_api = struct("struct uffdio_api", 24, { api: u64(0), features: u64(8), ioctls: u64(16) });

export const uffdio_range = struct("struct uffdio_range", 16, { start: u64(0), len: u64(8) });

export const uffdio_register = struct("struct uffdio_register", 32, {
  "range.start": u64(0),
  "range.len": u64(8),
  mode: u64(16),
  ioctls: u64(24),
});

export const uffdio_copy = struct("struct uffdio_copy", 40, { dst: u64(0), src: u64(8), len: u64(16), mode: u64(24), copy: u64(32) });

export const uffdio_zeropage = struct("struct uffdio_zeropage", 32, {
  "range.start": u64(0),
  "range.len": u64(8),
  mode: u64(16),
  zeropage: u64(24),
});

// ---- wrappers ----

/** userfaultfd(2); flags are O_CLOEXEC / O_NONBLOCK (and UFFD_USER_MODE_ONLY). */
export function userfaultfd(flags: number): number {
  return check("userfaultfd", libc.syscall(SYS_userfaultfd, flags, 0, 0, 0, 0, 0) as number);
}

/** UFFDIO_API handshake; returns the features and ioctls the kernel grants. */
export function uffdApi(fd: number, features: number): { features: bigint; ioctls: bigint } {
  const api = new StructView(uffdio_api).set("api", UFFD_API).set("features", features);
  ioctl(fd, UFFDIO_API, api.bytes, "UFFDIO_API");
  return { features: api.get64("features"), ioctls: api.get64("ioctls") };
}

/** UFFDIO_REGISTER over [start, start+len); returns the ioctls allowed on that range. */
export function uffdRegister(fd: number, start: number, len: number, mode: number): bigint {
  const reg = new StructView(uffdio_register).set("range.start", start).set("range.len", len).set("mode", mode);
  ioctl(fd, UFFDIO_REGISTER, reg.bytes, "UFFDIO_REGISTER");
  return reg.get64("ioctls");
}

export function uffdUnregister(fd: number, start: number, len: number): void {
  ioctl(fd, UFFDIO_UNREGISTER, new StructView(uffdio_range).set("start", start).set("len", len).bytes, "UFFDIO_UNREGISTER");
}

export function uffdWake(fd: number, start: number, len: number): void {
  ioctl(fd, UFFDIO_WAKE, new StructView(uffdio_range).set("start", start).set("len", len).bytes, "UFFDIO_WAKE");
}

/** UFFDIO_COPY of `source` to host address `dst`; returns the bytes copied. */
export function uffdCopy(fd: number, dst: number, source: Uint8Array, mode = 0): number {
  const copy = new StructView(uffdio_copy).set("dst", dst).set("src", ptr(source)).set("len", source.byteLength).set("mode", mode);
  ioctl(fd, UFFDIO_COPY, copy.bytes, "UFFDIO_COPY");
  return copy.get("copy");
}

/** UFFDIO_ZEROPAGE over [start, start+len); returns the bytes zero-mapped. */
export function uffdZeropage(fd: number, start: number, len: number, mode = 0): number {
  const zero = new StructView(uffdio_zeropage).set("range.start", start).set("range.len", len).set("mode", mode);
  ioctl(fd, UFFDIO_ZEROPAGE, zero.bytes, "UFFDIO_ZEROPAGE");
  return zero.get("zeropage");
}
