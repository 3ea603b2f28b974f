import { lastErrno } from "./libc.ts";
import { SyscallError } from "./errno.ts";

/** Throws a SyscallError when a libc call returned -1; otherwise returns its result. */
export function check<R extends number | bigint>(call: string, result: R, detail?: string): R {
  if (result === -1 || result === -1n) throw new SyscallError(call, lastErrno(), detail);
  return result;
}
