/** A file's data ranges (SEEK_DATA / SEEK_HOLE): what a sparse file or a memfd holds, without reading it. */
import { SEEK_DATA, SEEK_HOLE } from "./constants.ts";
import { SyscallError } from "./errno.ts";
import { lseek } from "./files.ts";

/** [offset, length] of each data range in `fd`'s first `bytes`; all of it where the filesystem cannot tell holes. */
export function dataRanges(fd: number, bytes: number): Array<[number, number]> {
  const ranges: Array<[number, number]> = [];
  try {
    for (let at = 0; at < bytes; ) {
      const start = lseek(fd, at, SEEK_DATA);
      if (start >= bytes) break;
      const end = Math.min(lseek(fd, start, SEEK_HOLE), bytes);
      ranges.push([start, end - start]);
      at = end;
    }
  } catch (error) {
    if (error instanceof SyscallError && error.errnoName === "ENXIO") return ranges; // no data past `at`
    if (error instanceof SyscallError && error.errnoName === "EINVAL") return [[0, bytes]];
    throw error;
  }
  return ranges;
}
