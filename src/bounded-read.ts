/**
 * Reading a file a user or a peer named, without trusting it: only a regular file, and at most a
 * stated number of bytes. The file is opened once (non-blocking, so a FIFO cannot hang the open),
 * the check is made on that descriptor (no race with a rename), and no more than the limit plus
 * one byte is ever read (a file that changes size after the check is refused).
 */
import { closeSync, constants, fstatSync, openSync, readSync, type Stats } from "node:fs";
import { type ErrorCode, SnowflockError } from "./errors.ts";
import { formatSize } from "./size.ts";

export interface BoundedReadOptions {
  /** What the file is, for messages ("descriptor", "inventory"). */
  what: string;
  maxBytes: number;
  /** The code of the refusal when the file is not a regular file or is too large. */
  code?: ErrorCode;
  /** Called with the open file's status once it passed the checks (e.g. to warn about its mode). */
  inspect?: (stat: Stats) => void;
  /** Refuse a symbolic link at `path` (files snowflock itself wrote, in its run directory). */
  noFollow?: boolean;
}

export function readRegularFile(
  path: string,
  { what, maxBytes, code = "USAGE", inspect, noFollow = false }: BoundedReadOptions,
): Uint8Array {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY | (noFollow ? constants.O_NOFOLLOW : 0));
  } catch (error) {
    const errno = (error as NodeJS.ErrnoException).code;
    throw new SnowflockError(
      errno === "ENOENT" ? "NOT_FOUND" : code,
      `cannot read the ${what} ${path}: ${errno ?? (error as Error).message}`,
    );
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw new SnowflockError(code, `the ${what} ${path} is not a regular file`, `give the path of a ${what} file`);
    if (stat.size > maxBytes)
      throw new SnowflockError(code, `the ${what} ${path} is larger than ${formatSize(maxBytes)}, the most a ${what} can be`);
    inspect?.(stat);
    // One byte more than fstat promised: reading it means the file grew under us.
    const buffer = new Uint8Array(stat.size + 1);
    let length = 0;
    while (length < buffer.byteLength) {
      const n = readSync(fd, buffer, length, buffer.byteLength - length, null);
      if (n === 0) break;
      length += n;
    }
    if (length !== stat.size) throw new SnowflockError(code, `the ${what} ${path} changed while it was read`);
    return buffer.subarray(0, length);
  } finally {
    closeSync(fd);
  }
}
