/**
 * `snowflock run --kernel` refuses bad input in one line before anything starts: no VM, no name
 * claimed, nothing in the run directory (no KVM needed: the checks come first).
 */
import { describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bzImage } from "../support/bzimage-sample.ts";
import { snowflock, testRunDir } from "../support/cli.ts";
import { KVM_REQUIRED } from "../support/kvm.ts";

async function refused(args: string[], files: (dir: string) => void = () => {}) {
  const runDir = testRunDir();
  const inputs = join(runDir, "..", `${runDir.split("/").pop()}-inputs`);
  mkdirSync(inputs);
  files(inputs);
  const result = await snowflock(
    args.map((a) => a.replace("@", `${inputs}/`)),
    { SNOWFLOCK_RUN_DIR: runDir },
  );
  expect(result.status).toBe(1);
  expect(readdirSync(runDir)).toEqual([]);
  const lines = result.stderr.trim().split("\n");
  expect(lines).toHaveLength(1);
  return lines[0]!.replace(`${inputs}/`, "@");
}

const notAKernel = (dir: string) => writeFileSync(join(dir, "notes.txt"), "hello, not a kernel\n".repeat(100));

describe("snowflock run --kernel: bad input", () => {
  test("a file that is not a kernel", async () => {
    expect(await refused(["run", "--kernel", "@notes.txt", "--detach"], notAKernel)).toContain(
      "@notes.txt: not a kernel: neither a Linux bzImage (no boot sector with 'HdrS') nor an ELF file",
    );
  });

  test("a kernel or an initrd that is not there, a directory for a kernel", async () => {
    expect(await refused(["run", "--kernel", "@vmlinuz"])).toContain("cannot read the kernel @vmlinuz: ENOENT");
    expect(await refused(["run", "--kernel", "@dir"], (d) => mkdirSync(join(d, "dir")))).toContain("the kernel @dir is not a regular file");
  });

  test("a bzImage with an initrd that is not there", async () => {
    const kernel = (dir: string) => writeFileSync(join(dir, "vmlinuz"), bzImage(new Uint8Array(4096)));
    expect(await refused(["run", "--kernel", "@vmlinuz", "--initrd", "@initrd.img", "--detach"], kernel)).toContain(
      "cannot read the initrd @initrd.img: ENOENT",
    );
  });

  test("an ELF that is not a bootable kernel; an initrd given to it is never read", async () => {
    const elf = (dir: string) => {
      const bytes = new Uint8Array(64);
      bytes.set([0x7f, 0x45, 0x4c, 0x46, 2, 1]);
      writeFileSync(join(dir, "vmlinux"), bytes);
    };
    expect(await refused(["run", "--kernel", "@vmlinux", "--initrd", "@missing"], elf)).toContain(
      "@vmlinux: guest image is not a bootable PVH ELF",
    );
  });

  test("workload and --kernel together; --initrd or --cmdline without --kernel; nothing to boot", async () => {
    expect(await refused(["run", "hello", "--kernel", "@k"])).toContain("a workload ('hello') is for the built-in guest");
    expect(await refused(["run", "hello", "--cmdline", "quiet"])).toContain("--initrd, --cmdline, --disk and --net go with --kernel");
    expect(await refused(["run"])).toContain("run needs a workload of the built-in guest or --kernel PATH");
  });

  test("a config file: not JSON, an unknown key, a wrong type; its paths are relative to it", async () => {
    const config = (text: string) => (dir: string) => {
      notAKernel(dir);
      writeFileSync(join(dir, "vm.json"), text);
    };
    expect(await refused(["run", "--config-file", "@vm.json"], config("{"))).toContain("the VM config @vm.json is not JSON");
    expect(await refused(["run", "--config-file", "@vm.json"], config('{"kernel":"notes.txt","disk":"x"}'))).toContain(
      'has an unknown key "disk" (known keys: kernel, disks, net, initrd, cmdline, mem, vcpus, name)',
    );
    expect(await refused(["run", "--config-file", "@vm.json"], config('{"vcpus":"two"}'))).toContain('"vcpus" must be a number, not "two"');
    expect(await refused(["run", "--config-file", "@vm.json"], config('{"kernel":"notes.txt"}'))).toContain("@notes.txt: not a kernel");
    expect(await refused(["run", "--config-file", "@vm.json"], config('{"disks":[{"path":"a","ro":true}]}'))).toContain(
      '"disks" entry 0 has an unknown key "ro"',
    );
    expect(await refused(["run", "--config-file", "@vm.json"], config('{"net":{"bridge":"br 0"}}'))).toContain(
      '"net" names a bad bridge "br 0"',
    );
    expect(await refused(["run", "--config-file", "@vm.json"], config('{"net":"br0"}'))).toContain('"net" must be true or an object');
  });

  test("disks: not there, a size no disk has, a bad --disk, or read-only asked read-write", async () => {
    const kernel = (dir: string) => {
      writeFileSync(join(dir, "vmlinuz"), bzImage(new Uint8Array(4096)));
      writeFileSync(join(dir, "odd.img"), new Uint8Array(1000));
    };
    expect(await refused(["run", "--kernel", "@vmlinuz", "--disk", "@none.img", "--detach"], kernel)).toContain(
      "the disk image @none.img is not there",
    );
    expect(await refused(["run", "--kernel", "@vmlinuz", "--disk", "@odd.img,ro"], kernel)).toContain(
      "has 1000 bytes, not a whole number of 512-byte sectors",
    );
    expect(await refused(["run", "--kernel", "@vmlinuz", "--disk", "@odd.img,rx"], kernel)).toContain("bad --disk");
    expect(await refused(["run", "hello", "--disk", "@odd.img"])).toContain("--disk and --net go with --kernel");
    expect(await refused(["run", "hello", "--net"])).toContain("--disk and --net go with --kernel");
    expect(await refused(["run", "--kernel", "@vmlinuz", "--net", "a-bridge-name-too-long"], kernel)).toContain(
      "bad bridge name 'a-bridge-name-too-long'",
    );
  });

  test("a disk on a read-only file system asked read-write: refused with the way to give it read-only", async () => {
    if (process.getuid?.() !== 0) {
      if (KVM_REQUIRED) throw new Error("this test mounts a read-only file system: run it as root");
      console.log("skipped: needs root to mount a read-only file system");
      return;
    }
    const mount = mkdtempSync(join(tmpdir(), "snowflock-ro-"));
    const sh = (command: string) => expect(Bun.spawnSync(["sh", "-c", command]).exitCode).toBe(0);
    sh(`mount -t tmpfs -o size=1m tmpfs ${mount} && head -c 4096 /dev/zero > ${mount}/disk.img && mount -o remount,ro ${mount}`);
    try {
      const kernel = (dir: string) => writeFileSync(join(dir, "vmlinuz"), bzImage(new Uint8Array(4096)));
      expect(await refused(["run", "--kernel", "@vmlinuz", "--disk", `${mount}/disk.img`], kernel)).toContain(
        `the disk image ${mount}/disk.img cannot be opened for writing (EROFS) (give it read-only as --disk ${mount}/disk.img,ro)`,
      );
    } finally {
      sh(`umount ${mount}`);
    }
  });
});
