// Builds the tools for Linux guests (Xen domUs and VMs of snowflock's KVM VMM) with the host gcc,
// each one static x86-64 Linux executable with no libc (they run in any initramfs): `sf`, the
// Impromptu Cluster API tool, and `dataset`, the seeded test dataset (test jobs).
//   bun guest/linux/build.ts      -> guest/build/sf-linux, guest/build/dataset-linux
import { mkdir, rename, rm, stat } from "node:fs/promises";
import { join, relative } from "node:path";

const CFLAGS = [
  "-std=gnu11", "-m64", "-static", "-nostdlib", "-ffreestanding", "-O2", "-fno-stack-protector",
  "-fno-pie", "-no-pie", "-fcf-protection=none", "-fno-asynchronous-unwind-tables",
  "-Wall", "-Wextra", "-Werror", "-Wl,--build-id=none", "-Wl,-z,noexecstack", "-s",
];

const TOOLS = { sf: "sf.c", dataset: "dataset.c" } as const;
/** Headers a tool may include: a change to any of them rebuilds it. */
const SHARED = ["freestanding.h", "sf-xen.h", "sf-kvm.h"].map((name) => join(import.meta.dir, name));

async function mtime(path: string): Promise<number> {
  return stat(path).then((s) => s.mtimeMs, () => -1);
}

async function buildTool(source: string, out: string): Promise<void> {
  const [built, ...inputs] = await Promise.all([mtime(out), mtime(source), ...SHARED.map(mtime), mtime(import.meta.path)]);
  if (inputs.every((t) => built > t)) return;
  const tmp = `${out}.tmp-${process.pid}`;
  try {
    const proc = Bun.spawn(["gcc", ...CFLAGS, "-o", tmp, source], { stdout: "pipe", stderr: "pipe" });
    const [err, code] = await Promise.all([new Response(proc.stderr).text(), proc.exited]);
    if (code !== 0) throw new Error(`${relative(process.cwd(), source)} build failed (exit ${code}):\n${err}`);
    await rename(tmp, out);
  } finally {
    await rm(tmp, { force: true });
  }
}

/** Builds the Linux guest tools into `outDir` (each only when older than its sources); their paths. */
export async function buildLinuxTools(outDir: string): Promise<Record<keyof typeof TOOLS, string>> {
  const names = Object.keys(TOOLS) as Array<keyof typeof TOOLS>;
  await mkdir(outDir, { recursive: true });
  const paths = names.map((name) => join(outDir, `${name}-linux`));
  await Promise.all(names.map((name, i) => buildTool(join(import.meta.dir, TOOLS[name]), paths[i]!)));
  return Object.fromEntries(names.map((name, i) => [name, paths[i]!])) as Record<keyof typeof TOOLS, string>;
}

if (import.meta.main) {
  const built = await buildLinuxTools(join(import.meta.dir, "../build"));
  for (const path of Object.values(built)) console.log(relative(process.cwd(), path) || path);
}
