/**
 * A newc cpio archive in memory, for the files a test domU gets on top of the busybox initramfs
 * (Linux unpacks concatenated archives in order, later files replacing earlier ones).
 */
export interface CpioFile {
  path: string;
  data: Uint8Array | string;
  mode: number;
}

const encoder = new TextEncoder();
const hex = (n: number) => n.toString(16).padStart(8, "0");
const pad4 = (n: number) => (4 - (n % 4)) % 4;

export function cpioArchive(files: CpioFile[]): Uint8Array {
  const parts: Uint8Array[] = [];
  let inode = 1;
  const entry = (path: string, mode: number, data: Uint8Array) => {
    const name = encoder.encode(`${path}\0`);
    const header = encoder.encode(
      `070701${hex(inode++)}${hex(mode)}${hex(0)}${hex(0)}${hex(1)}${hex(0)}${hex(data.length)}${hex(0)}${hex(0)}${hex(0)}${hex(0)}${hex(name.length)}${hex(0)}`,
    );
    parts.push(header, name, new Uint8Array(pad4(header.length + name.length)), data, new Uint8Array(pad4(data.length)));
  };
  const directories = new Set<string>();
  for (const file of files) {
    const segments = file.path.split("/").slice(0, -1);
    for (let i = 1; i <= segments.length; i++) {
      const dir = segments.slice(0, i).join("/");
      if (dir && !directories.has(dir)) {
        directories.add(dir);
        entry(dir, 0o040755, new Uint8Array());
      }
    }
    entry(file.path, 0o100000 | file.mode, typeof file.data === "string" ? encoder.encode(file.data) : file.data);
  }
  entry("TRAILER!!!", 0, new Uint8Array());
  return Buffer.concat(parts); // every header, name and body is padded to 4 already
}
