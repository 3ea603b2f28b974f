/**
 * Files snowflock creates for its own user only: opened with O_CREAT|O_EXCL|O_NOFOLLOW and mode
 * 0600, so a link or file planted at the path is never followed or reused, and nobody else can
 * read what is written. Whole files are written under an exclusive temporary name and renamed.
 */
import { closeSync, constants, fsyncSync, openSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";

const CREATE = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

/** A new file at `path` for writing (a stale file or link there is unlinked first, never followed). */
export function createPrivateFile(path: string): number {
  rmSync(path, { force: true });
  return openSync(path, CREATE, 0o600);
}

/**
 * Writes `data` to `path` atomically: an exclusive 0600 temporary file beside it, renamed over the
 * path (a link there is replaced, not followed). `durable`: fsync before the rename.
 */
export function writePrivateFile(path: string, data: string | Uint8Array, { durable = false } = {}): void {
  const temporary = `${path}.tmp-${randomBytes(6).toString("hex")}`;
  try {
    const fd = openSync(temporary, CREATE, 0o600);
    try {
      writeFileSync(fd, data);
      if (durable) fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temporary, path);
  } catch (error) {
    rmSync(temporary, { force: true });
    throw error;
  }
}
