/**
 * The Linux guest of the tests: Debian's stock kernel and a busybox initramfs whose /init is the
 * test's script. The kernel and busybox come from Debian's packages through
 * test/linux/build-assets.sh, which leaves them in .cache/linux-guest/ (the nested KVM host sees
 * the repository, so the same files serve there).
 */
import { copyFileSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { expect } from "bun:test";
import { newcArchive } from "./initramfs.ts";
import { snowflock, testRunDir } from "./cli.ts";
import { kvmIsPvm, PVM_TOO_SLOW } from "./pvm.ts";

const ASSETS = join(import.meta.dir, "../../.cache/linux-guest");

/** Why the Linux guest tests cannot run here (undefined: they can). */
export function linuxAssetsMissing(): string | undefined {
  if (kvmIsPvm()) return `${PVM_TOO_SLOW} (SNOWFLOCK_REQUIRE_KVM=1 bun run test runs them nested)`;
  for (const file of ["vmlinuz", "busybox", "modules/order", "disk.ext4"]) {
    if (!existsSync(join(ASSETS, file))) return `no ${join(".cache/linux-guest", file)}: run bash test/linux/build-assets.sh (as root)`;
  }
  return undefined;
}

export function stockKernel(): Uint8Array {
  return new Uint8Array(readFileSync(stockKernelPath()));
}

export function stockKernelPath(): string {
  return join(ASSETS, "vmlinuz");
}

export interface InitramfsOptions {
  /** The virtio and ext4 modules, loaded before `init` runs. */
  modules?: boolean;
  /** The Linux guest tools (guest/linux, built by `bun run build`): /bin/sf and /bin/dataset. */
  tools?: boolean;
}

const TOOLS = join(import.meta.dir, "../../guest/build");

/** busyboxInitramfs(init) written to `dir`; returns its path (for `snowflock run --initrd`). */
export function writeBusyboxInitramfs(dir: string, init: string, options: InitramfsOptions = {}): string {
  const path = join(dir, "initramfs.cpio");
  writeFileSync(path, busyboxInitramfs(init, options));
  return path;
}

/** An initramfs with busybox (its applets linked in /bin at boot) and `init` as /init (a busybox sh script). */
export function busyboxInitramfs(init: string, options: InitramfsOptions = {}): Uint8Array {
  const order = options.modules ? readFileSync(join(ASSETS, "modules/order"), "utf8").trim().split("\n") : [];
  const load = order.map((m) => `insmod /lib/modules/${m}.ko`).join("\n");
  return newcArchive([
    ...["bin", "dev", "proc", "sys", "tmp", "mnt", "lib", "lib/modules"].map((path) => ({ path, kind: "dir" as const })),
    { path: "bin/busybox", kind: "file", mode: 0o755, data: new Uint8Array(readFileSync(join(ASSETS, "busybox"))) },
    { path: "bin/sh", kind: "symlink", target: "busybox" },
    ...order.map((m) => ({
      path: `lib/modules/${m}.ko`,
      kind: "file" as const,
      mode: 0o644,
      data: new Uint8Array(readFileSync(join(ASSETS, "modules", `${m}.ko`))),
    })),
    ...(options.tools
      ? (["sf", "dataset"] as const).map((tool) => ({
          path: `bin/${tool}`,
          kind: "file" as const,
          mode: 0o755,
          data: new Uint8Array(readFileSync(join(TOOLS, `${tool}-linux`))),
        }))
      : []),
    {
      path: "init",
      kind: "file",
      mode: 0o755,
      data: `#!/bin/busybox sh\n/bin/busybox --install -s /bin\nmount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t devtmpfs dev /dev\n${load}\n${init}`,
    },
  ]);
}

/** A copy of the test disk (16 MiB ext4 holding hello.txt) in `dir`, for a test to write. */
export function copyTestDisk(dir: string, name = "disk.ext4"): string {
  const path = join(dir, name);
  copyFileSync(join(ASSETS, "disk.ext4"), path);
  return path;
}

/** What `snowflock run --json` of a Linux job reports (the parts the tests read). */
export interface LinuxJobResult {
  console: string[];
  stats: { pagesFetched: number; pagesAvoided: Record<string, number> };
  /** What snowflock itself said on stderr (its warnings, a refused clone's reason). */
  stderr: string;
}

/**
 * `snowflock run --kernel` of a job initramfs (busybox, the modules, sf and dataset; `job` is its
 * script) in the foreground, with `extra` options; its --json result. The job's own lines start
 * with "job: " (see jobLines).
 */
export async function runLinuxJob(job: string, extra: string[], memory = "256M", budgetMs = 240_000): Promise<LinuxJobResult> {
  const missing = linuxAssetsMissing();
  if (missing) throw new Error(missing);
  const runDir = testRunDir();
  const initrd = writeBusyboxInitramfs(runDir, job, { modules: true, tools: true });
  const r = await snowflock(
    ["run", "--kernel", stockKernelPath(), "--initrd", initrd, "--mem", memory, "--name", "job", "--json", ...extra],
    { SNOWFLOCK_RUN_DIR: runDir },
    budgetMs, // snowflock() scales it
  );
  expect(r.status, r.stderr).toBe(0);
  return { ...(JSON.parse(r.stdout) as Omit<LinuxJobResult, "stderr">), stderr: r.stderr };
}

export function jobLines(result: LinuxJobResult): string[] {
  return result.console.filter((l) => l.startsWith("job: "));
}

/**
 * How a job went, for a failed expectation: its own and sf's lines (and the kernel's OOM kills and
 * panic), then the console before the kernel's panic (a job script that ends takes init, and the
 * panic's trace alone would fill a plain tail) or else the console's last lines, then the end of
 * snowflock's stderr.
 */
export function jobStory(result: LinuxJobResult, lines = 25): string {
  const panic = result.console.findIndex((l) => l.includes("Kernel panic"));
  const end = panic >= 0 ? panic + 1 : result.console.length;
  const own = result.console.filter((l) => l.startsWith("job: ") || l.startsWith("sf: ") || /Out of memory|Kernel panic/.test(l));
  const said = result.stderr.trim().split("\n").slice(-lines);
  return [...own, "--- the console:", ...result.console.slice(Math.max(0, end - lines), end), "--- snowflock's stderr:", ...said].join(
    "\n",
  );
}
