/**
 * Copies of disk content into unnamed files (O_TMPFILE): a disk frozen for clones at a fork. A
 * copy shares the source's extents where the filesystem can (FICLONE: btrfs, XFS), else the
 * kernel copies the data ranges only (copy_file_range between SEEK_DATA and SEEK_HOLE), so a
 * sparse image stays sparse; reads and writes where neither works (another filesystem, old kernels).
 */
import { FICLONE, O_RDWR, O_TMPFILE } from "../sys/constants.ts";
import { dataRanges } from "../sys/data-ranges.ts";
import { SyscallError } from "../sys/errno.ts";
import { close, copyFileRange, ftruncate, open, pread, pwrite } from "../sys/files.ts";
import { ioctl } from "../sys/ioctl.ts";

const BOUNCE_BYTES = 1 << 20;

/** A new unnamed file in `directory`, `bytes` long (a hole); the caller owns the fd. */
export function unnamedFile(directory: string, bytes: number): number {
  const fd = open(directory, O_TMPFILE | O_RDWR, 0o600);
  try {
    ftruncate(fd, bytes);
    return fd;
  } catch (error) {
    close(fd);
    throw error;
  }
}

/** Reads exactly `target.byteLength` bytes at `offset` (a short read is the disk's I/O error). */
export function readFully(fd: number, target: Uint8Array, offset: number): void {
  for (let done = 0; done < target.byteLength; ) {
    const n = pread(fd, target.subarray(done), offset + done);
    if (n === 0) throw new SyscallError("pread", 5, "short read");
    done += n;
  }
}

export function writeFully(fd: number, source: Uint8Array, offset: number): void {
  for (let done = 0; done < source.byteLength; ) done += pwrite(fd, source.subarray(done), offset + done);
}

/** Copies `length` bytes at `offset` from `source` to the same place in `target`. */
export function copyRange(source: number, target: number, offset: number, length: number): void {
  let done = 0;
  try {
    while (done < length) {
      const n = copyFileRange(source, offset + done, target, offset + done, length - done);
      if (n === 0) throw new SyscallError("copy_file_range", 5, "short copy");
      done += n;
    }
  } catch (error) {
    if (!(error instanceof SyscallError) || !["EXDEV", "ENOSYS", "EINVAL", "EOPNOTSUPP"].includes(error.errnoName)) throw error;
    const bounce = new Uint8Array(Math.min(BOUNCE_BYTES, length - done));
    while (done < length) {
      const piece = bounce.subarray(0, Math.min(bounce.byteLength, length - done));
      readFully(source, piece, offset + done);
      writeFully(target, piece, offset + done);
      done += piece.byteLength;
    }
  }
}

/** Makes `target` hold `source`'s first `bytes` (`target` is that long already, all hole). */
export function copyContent(source: number, target: number, bytes: number): void {
  try {
    ioctl(target, FICLONE, source, "FICLONE");
    return;
  } catch (error) {
    if (!(error instanceof SyscallError)) throw error;
  }
  for (const [offset, length] of dataRanges(source, bytes)) copyRange(source, target, offset, length);
}
