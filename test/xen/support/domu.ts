/** The test domU with files of a test's own on top of build-host.sh's busybox initramfs. */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type CpioFile, cpioArchive } from "./cpio.ts";
import { DOMU_DIR } from "./xen-test.ts";

/**
 * Writes `work`/initrd (the base initramfs, then `files` as a second archive) and `work`/domu.cfg
 * (build-host.sh's pvh.cfg with that initrd, and `configLines` appended); returns the config's path.
 */
export function writeTestDomU(work: string, files: CpioFile[], configLines: string[] = []): string {
  const base = readFileSync(join(DOMU_DIR, "initrd.gz"));
  // The kernel reads a cpio archive after a compressed one only from a 4-byte boundary (zeros between are skipped).
  writeFileSync(join(work, "initrd"), Buffer.concat([base, new Uint8Array((4 - (base.length % 4)) % 4), cpioArchive(files)]));
  const config = readFileSync(join(DOMU_DIR, "pvh.cfg"), "utf8").replace(/^ramdisk = .*$/m, `ramdisk = "${join(work, "initrd")}"`);
  const path = join(work, "domu.cfg");
  writeFileSync(path, [config.trimEnd(), ...configLines, ""].join("\n"));
  return path;
}
