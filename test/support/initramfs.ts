/**
 * A newc cpio archive (what the Linux kernel unpacks as an initramfs), written here so a test
 * guest's root filesystem is a list of files in the test, not a tool's output.
 */

export type InitramfsEntry =
  | { path: string; kind: "dir"; mode?: number }
  | { path: string; kind: "file"; data: Uint8Array | string; mode?: number }
  | { path: string; kind: "symlink"; target: string };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;

function header(ino: number, mode: number, size: number, nameSize: number): string {
  // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize, check
  const fields = [ino, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, nameSize, 0];
  return `070701${fields.map((n) => n.toString(16).padStart(8, "0")).join("")}`;
}

const pad4 = (n: number) => (4 - (n % 4)) % 4;

export function newcArchive(entries: InitramfsEntry[]): Uint8Array {
  const encoder = new TextEncoder();
  const parts: Uint8Array[] = [];
  const add = (ino: number, mode: number, name: string, data: Uint8Array) => {
    const nameBytes = encoder.encode(`${name}\0`);
    const head = encoder.encode(header(ino, mode, data.byteLength, nameBytes.byteLength));
    parts.push(head, nameBytes, new Uint8Array(pad4(head.byteLength + nameBytes.byteLength)), data, new Uint8Array(pad4(data.byteLength)));
  };
  entries.forEach((entry, i) => {
    const name = entry.path.replace(/^\/+/, "");
    if (entry.kind === "dir") add(i + 1, S_IFDIR | (entry.mode ?? 0o755), name, new Uint8Array());
    else if (entry.kind === "symlink") add(i + 1, S_IFLNK | 0o777, name, encoder.encode(entry.target));
    else add(i + 1, S_IFREG | (entry.mode ?? 0o644), name, typeof entry.data === "string" ? encoder.encode(entry.data) : entry.data);
  });
  add(0, 0, "TRAILER!!!", new Uint8Array());
  const total = parts.reduce((n, p) => n + p.byteLength, 0);
  const archive = new Uint8Array(total + pad4(total) + ((512 - ((total + pad4(total)) % 512)) % 512));
  let at = 0;
  for (const p of parts) {
    archive.set(p, at);
    at += p.byteLength;
  }
  return archive;
}
