/**
 * Writable disks across a fork (src/disk): a frozen copy holds the disk as it was, a clone's
 * overlay takes its writes in 4 KiB chunks (a partial write copies the rest of its chunk up), two
 * threads' views of one overlay agree, a clone's disk can be frozen again for its own clones, and a
 * full filesystem is one clear error that leaves nothing behind.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { execFileSync } from "node:child_process";
import { closeSync, fstatSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { closeDisk, freezeDisk, openDescribedDisk } from "../../src/disk/clone-disks.ts";
import { openDiskImage } from "../../src/disk/image.ts";
import { OVERLAY_CHUNK_BYTES, openBlockStore } from "../../src/disk/store.ts";
import { SnowflockError } from "../../src/errors.ts";
import { pread } from "../../src/sys/files.ts";

const dir = mkdtempSync(join(tmpdir(), "snowflock-disk-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A disk of `bytes` whose every byte tells its 512-byte sector. */
function image(bytes: number): { path: string; content: Uint8Array } {
  const path = join(dir, `image-${Math.random().toString(16).slice(2)}.img`);
  const content = Uint8Array.from({ length: bytes }, (_, i) => ((i >> 9) * 7 + 1) & 0xff);
  writeFileSync(path, content);
  return { path, content };
}

/** A fork of a disk of `bytes`: the parent's image, its frozen copy and one clone's disk over it; `using` closes all three. */
function forkedDisk(bytes: number) {
  const { path, content } = image(bytes);
  const parent = openDiskImage({ path, readOnly: false });
  const frozen = freezeDisk(parent, path, dir);
  const clone = openDescribedDisk({ path: `/proc/self/fd/${frozen}`, readOnly: false, copyOnWrite: true, image: path }, dir);
  return {
    path,
    content,
    parent,
    frozen,
    clone,
    [Symbol.dispose]() {
      closeDisk(clone);
      closeSync(frozen);
      closeDisk(parent);
    },
  };
}

function readAll(fd: number, bytes: number): Uint8Array {
  const out = new Uint8Array(bytes);
  expect(pread(fd, out, 0)).toBe(bytes);
  return out;
}

describe("disk overlays for clones", () => {
  test("a clone's writes land in its overlay; the frozen copy and the user's image stay as they were", () => {
    const bytes = 64 * 1024 + 1024; // a last chunk of 1 KiB
    using disk = forkedDisk(bytes);
    const { path, content, frozen, clone } = disk;
    expect(clone.readOnly).toBe(false);
    expect(clone.serial).toBe(path.split("/").at(-1)!.slice(0, 20));
    const store = openBlockStore(clone);
    const expected = content.slice();
    const write = (offset: number, length: number, value: number) => {
      const data = new Uint8Array(length).fill(value);
      store.write(data, offset);
      expected.set(data, offset);
    };
    write(512, 512, 0xa1); // partial: the chunk's other sectors come up from the frozen copy
    write(3 * OVERLAY_CHUNK_BYTES, 2 * OVERLAY_CHUNK_BYTES, 0xb2); // two whole chunks
    write(OVERLAY_CHUNK_BYTES - 100, 200, 0xc3); // across a chunk boundary, both partial
    write(bytes - 512, 512, 0xd4); // in the short last chunk
    // A read across overlaid and untouched chunks.
    const all = new Uint8Array(bytes);
    store.read(all, 0);
    expect(Buffer.compare(all, expected)).toBe(0);
    const middle = new Uint8Array(10_000);
    store.read(middle, 2000);
    expect(Buffer.compare(middle, expected.subarray(2000, 12_000))).toBe(0);
    // A second thread's view of the same overlay (the shared bits travel to a Worker) reads the same.
    const other = openBlockStore(structuredClone(clone));
    const again = new Uint8Array(bytes);
    other.read(again, 0);
    expect(Buffer.compare(again, expected)).toBe(0);
    expect(Buffer.compare(readAll(frozen, bytes), content)).toBe(0);
    expect(Buffer.compare(readFileSync(path), content)).toBe(0);
    expect(readdirSync(dir).filter((f) => !f.startsWith("image-"))).toEqual([]); // the copies have no names
  });

  test("the parent writes its image after the fork; clones still read the disk as it was", () => {
    const bytes = 32 * 1024;
    using disk = forkedDisk(bytes);
    openBlockStore(disk.parent).write(new Uint8Array(bytes).fill(0xee), 0);
    const seen = new Uint8Array(bytes);
    openBlockStore(disk.clone).read(seen, 0);
    expect(Buffer.compare(seen, disk.content)).toBe(0);
  });

  test("a clone's disk frozen for its own clones holds its writes over the frozen copy", () => {
    const bytes = 48 * 1024;
    using disk = forkedDisk(bytes);
    const expected = disk.content.slice();
    const data = new Uint8Array(700).fill(0x5a);
    openBlockStore(disk.clone).write(data, 9000);
    expected.set(data, 9000);
    const second = freezeDisk(disk.clone, disk.path, dir);
    try {
      expect(Buffer.compare(readAll(second, bytes), expected)).toBe(0);
    } finally {
      closeSync(second);
    }
  });

  test("a sparse image stays sparse in its frozen copy", () => {
    const path = join(dir, "image-sparse.img");
    const bytes = 64 << 20;
    const fd = openSync(path, "w+");
    writeFileSync(fd, new Uint8Array(4096).fill(1));
    closeSync(fd);
    execFileSync("truncate", ["-s", String(bytes), path]);
    const parent = openDiskImage({ path, readOnly: false });
    const frozen = freezeDisk(parent, path, dir);
    try {
      const stat = fstatSync(frozen);
      expect(stat.size).toBe(bytes);
      expect(stat.blocks * 512).toBeLessThan(1 << 20);
      const head = new Uint8Array(4096);
      expect(pread(frozen, head, 0)).toBe(4096);
      expect(head.every((b) => b === 1)).toBe(true);
    } finally {
      closeSync(frozen);
      closeDisk(parent);
    }
  });

  const root = process.getuid?.() === 0;
  test.skipIf(!root)("a full filesystem: the freeze fails with one clear line and leaves no copy behind (root: a 1 MiB tmpfs)", () => {
    const small = join(dir, "small");
    mkdirSync(small);
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", small]);
    try {
      const path = join(small, "image.img");
      writeFileSync(path, new Uint8Array(600 * 1024).fill(3));
      const parent = openDiskImage({ path, readOnly: false });
      try {
        let error: unknown;
        try {
          closeSync(freezeDisk(parent, path, small));
        } catch (e) {
          error = e;
        }
        expect(error).toBeInstanceOf(SnowflockError);
        expect((error as SnowflockError).code).toBe("DISK");
        expect((error as SnowflockError).render()).toContain(`cannot freeze the disk ${path} for clones`);
        expect((error as SnowflockError).render()).toContain("ENOSPC");
        expect(readdirSync(small)).toEqual(["image.img"]);
        expect(execFileSync("df", ["--output=used", "-B1", small]).toString()).toContain(String(600 * 1024));
      } finally {
        closeDisk(parent);
      }
    } finally {
      execFileSync("umount", [small]);
    }
  });
});
