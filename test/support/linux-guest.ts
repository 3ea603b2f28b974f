/**
 * The Linux guest of the tests: Debian's stock kernel and a busybox initramfs whose /init is the
 * test's script. The kernel and busybox come from Debian's packages through
 * test/linux/build-assets.sh, which leaves them in .cache/linux-guest/ (the nested KVM host sees
 * the repository, so the same files serve there).
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { newcArchive } from "./initramfs.ts";

const ASSETS = join(import.meta.dir, "../../.cache/linux-guest");

/** Why the Linux guest tests cannot run here (undefined: they can). */
export function linuxAssetsMissing(): string | undefined {
  for (const file of ["vmlinuz", "busybox"]) {
    if (!existsSync(join(ASSETS, file))) return `no ${join(".cache/linux-guest", file)}: run bash test/linux/build-assets.sh (as root)`;
  }
  return undefined;
}

export function stockKernel(): Uint8Array {
  return new Uint8Array(readFileSync(join(ASSETS, "vmlinuz")));
}

/** An initramfs with busybox (its applets linked in /bin at boot) and `init` as /init (a busybox sh script). */
export function busyboxInitramfs(init: string): Uint8Array {
  return newcArchive([
    ...["bin", "dev", "proc", "sys", "tmp"].map((path) => ({ path, kind: "dir" as const })),
    { path: "bin/busybox", kind: "file", mode: 0o755, data: new Uint8Array(readFileSync(join(ASSETS, "busybox"))) },
    { path: "bin/sh", kind: "symlink", target: "busybox" },
    {
      path: "init",
      kind: "file",
      mode: 0o755,
      data: `#!/bin/busybox sh\n/bin/busybox --install -s /bin\nmount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t devtmpfs dev /dev\n${init}`,
    },
  ]);
}
