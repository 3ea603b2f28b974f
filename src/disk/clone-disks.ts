/**
 * Writable disks across a fork. While the parent is paused its disk is frozen: an unnamed copy of
 * what the guest sees at that instant (disk/copy.ts: a reflink where the filesystem can). The
 * parent goes on writing its image; each clone reads the frozen copy, which the parent's process
 * holds open for it, under an overlay of its own (disk/store.ts), so no clone writes the parent's
 * image or another clone's disk, and a clone's writes go when it ends.
 */
import { closeSync } from "node:fs";
import { basename, dirname } from "node:path";
import { SnowflockError } from "../errors.ts";
import { SyscallError } from "../sys/errno.ts";
import { close } from "../sys/files.ts";
import { copyContent, copyRange, unnamedFile } from "./copy.ts";
import { type OpenDisk, openDiskImage } from "./image.ts";
import { newOverlayShare, overlaidRanges } from "./store.ts";

/** A disk as a descriptor names it for a restored machine. */
export interface DescribedDisk {
  /** What the machine opens: a shared read-only image, or the frozen copy under its overlay. */
  path: string;
  readOnly: boolean;
  /** The frozen copy of a writable disk: the machine writes an overlay of its own over it. */
  copyOnWrite?: boolean;
  /** The user's image it came from, for messages. */
  image?: string;
}

/**
 * An unnamed copy of what `disk` holds now (its overlay applied), in the image's directory (so a
 * reflink can share its extents) or else in `scratchDirectory`. The caller owns the fd.
 */
export function freezeDisk(disk: OpenDisk, image: string, scratchDirectory: string): number {
  const target = unnamedFileIn([dirname(image), scratchDirectory], disk.bytes, image);
  try {
    copyContent(disk.fd, target, disk.bytes);
    if (disk.overlay) for (const [offset, length] of overlaidRanges(disk)) copyRange(disk.overlay.fd, target, offset, length);
    return target;
  } catch (error) {
    close(target);
    if (!(error instanceof SyscallError)) throw error;
    throw new SnowflockError(
      "DISK",
      `cannot freeze the disk ${image} for clones: ${error.message}`,
      error.errnoName === "ENOSPC" ? "free space where the image is (or in the run directory)" : undefined,
    );
  }
}

/** A disk for a machine restored from a descriptor: its overlay (a copy-on-write disk) in `scratchDirectory`. */
export function openDescribedDisk(disk: DescribedDisk, scratchDirectory: string): OpenDisk {
  if (!disk.copyOnWrite) return openDiskImage({ path: disk.path, readOnly: true });
  const frozen = openDiskImage({ path: disk.path, readOnly: true });
  try {
    const overlay = unnamedFileIn([scratchDirectory], frozen.bytes, disk.image ?? disk.path);
    const serial = disk.image ? basename(disk.image).slice(0, 20) : frozen.serial;
    return { ...frozen, serial, readOnly: false, overlay: newOverlayShare(overlay, frozen.bytes) };
  } catch (error) {
    closeSync(frozen.fd);
    throw error;
  }
}

export function closeDisk(disk: OpenDisk): void {
  closeSync(disk.fd);
  if (disk.overlay) closeSync(disk.overlay.fd);
}

function unnamedFileIn(directories: string[], bytes: number, image: string): number {
  let last: SyscallError | undefined;
  for (const directory of directories) {
    try {
      return unnamedFile(directory, bytes);
    } catch (error) {
      if (!(error instanceof SyscallError)) throw error;
      last = error;
    }
  }
  throw new SnowflockError(
    "DISK",
    `no room for a copy of the disk ${image} in ${directories.join(" or ")}: ${last?.message}`,
    last?.errnoName === "ENOSPC" ? "free space there" : undefined,
  );
}
