/**
 * A disk the user gives a VM (`--disk PATH[,ro]`): a raw image file, checked and opened before
 * anything starts, so that a missing file, one of a size no disk has, or a read-only file asked
 * for read-write is one clear line.
 */
import { closeSync, constants, fstatSync, openSync } from "node:fs";
import { basename } from "node:path";
import { SnowflockError } from "../errors.ts";
import type { SharedDisk } from "./store.ts";

export interface DiskAttachment {
  path: string;
  readOnly: boolean;
}

export interface OpenDisk extends SharedDisk {
  /** The guest sees it as the disk's serial (/sys/block/vdX/serial): the file's name, cut to 20 bytes. */
  serial: string;
}

const SECTOR = 512;

/** `PATH` or `PATH,ro` (also `PATH,rw`). */
export function parseDiskOption(value: string): DiskAttachment {
  const comma = value.lastIndexOf(",");
  const mode = comma < 0 ? "" : value.slice(comma + 1);
  if (comma >= 0 && mode !== "ro" && mode !== "rw")
    throw new SnowflockError("USAGE", `bad --disk '${value}'`, "give PATH, PATH,ro or PATH,rw");
  const path = comma < 0 ? value : value.slice(0, comma);
  if (path === "") throw new SnowflockError("USAGE", `bad --disk '${value}'`, "give the image's path");
  return { path, readOnly: mode === "ro" };
}

export function openDiskImage(disk: DiskAttachment): OpenDisk {
  let fd: number;
  try {
    fd = openSync(disk.path, disk.readOnly ? constants.O_RDONLY : constants.O_RDWR);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new SnowflockError("NOT_FOUND", `the disk image ${disk.path} is not there`);
    if (!disk.readOnly && (code === "EROFS" || code === "EACCES" || code === "EPERM" || code === "ETXTBSY"))
      throw new SnowflockError(
        "USAGE",
        `the disk image ${disk.path} cannot be opened for writing (${code})`,
        `give it read-only as --disk ${disk.path},ro`,
      );
    throw new SnowflockError("USAGE", `cannot open the disk image ${disk.path}: ${code ?? (error as Error).message}`);
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw new SnowflockError("USAGE", `the disk image ${disk.path} is not a regular file`);
    if (stat.size < SECTOR || stat.size % SECTOR !== 0)
      throw new SnowflockError("USAGE", `the disk image ${disk.path} has ${stat.size} bytes, not a whole number of 512-byte sectors`);
    return { fd, bytes: stat.size, readOnly: disk.readOnly, serial: basename(disk.path).slice(0, 20) };
  } catch (error) {
    closeSync(fd);
    throw error;
  }
}

/** Opens and closes each disk: the checks, before a VM or a name exists. */
export function checkDiskImages(disks: DiskAttachment[]): void {
  for (const disk of disks) closeSync(openDiskImage(disk).fd);
}
