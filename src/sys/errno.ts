import { SnowflockError } from "../errors.ts";

/** Linux errno numbers (asm-generic/errno-base.h, errno.h) for the names users and tests see. */
const ERRNO_NAMES: Record<number, string> = {
  1: "EPERM",
  2: "ENOENT",
  3: "ESRCH",
  4: "EINTR",
  5: "EIO",
  6: "ENXIO",
  7: "E2BIG",
  8: "ENOEXEC",
  9: "EBADF",
  10: "ECHILD",
  11: "EAGAIN",
  12: "ENOMEM",
  13: "EACCES",
  14: "EFAULT",
  16: "EBUSY",
  17: "EEXIST",
  18: "EXDEV",
  19: "ENODEV",
  20: "ENOTDIR",
  21: "EISDIR",
  22: "EINVAL",
  23: "ENFILE",
  24: "EMFILE",
  25: "ENOTTY",
  27: "EFBIG",
  28: "ENOSPC",
  30: "EROFS",
  32: "EPIPE",
  34: "ERANGE",
  38: "ENOSYS",
  61: "ENODATA",
  75: "EOVERFLOW",
  95: "EOPNOTSUPP",
  98: "EADDRINUSE",
  104: "ECONNRESET",
  110: "ETIMEDOUT",
  111: "ECONNREFUSED",
};

export function errnoName(errno: number): string {
  return ERRNO_NAMES[errno] ?? `errno ${errno}`;
}

/** A failed libc call: which call, with what, and the errno it left. */
export class SyscallError extends SnowflockError {
  override name = "SyscallError";
  readonly errnoName: string;
  constructor(
    readonly call: string,
    readonly errno: number,
    detail?: string,
  ) {
    super("SYSCALL", `${call}${detail ? ` (${detail})` : ""} failed: ${errnoName(errno)}`);
    this.errnoName = errnoName(errno);
  }
}
