// Builds `sf`, the Impromptu Cluster API tool for Linux domUs on Xen, with the host gcc: one
// static x86-64 Linux executable with no libc (it runs in any initramfs).
//   bun guest/xen/build.ts        -> guest/build/sf-xen
import { rename, rm, stat } from "node:fs/promises";
import { join, relative } from "node:path";

const SOURCE = join(import.meta.dir, "sf.c");

export const SF_CFLAGS = [
  "-std=gnu11", "-m64", "-static", "-nostdlib", "-ffreestanding", "-O2", "-fno-stack-protector",
  "-fno-pie", "-no-pie", "-fcf-protection=none", "-fno-asynchronous-unwind-tables",
  "-Wall", "-Wextra", "-Werror", "-Wl,--build-id=none", "-Wl,-z,noexecstack", "-s",
];

async function mtime(path: string): Promise<number> {
  return stat(path).then((s) => s.mtimeMs, () => -1);
}

export async function buildXenTool(outDir: string): Promise<string> {
  const out = join(outDir, "sf-xen");
  const [built, source, script] = await Promise.all([mtime(out), mtime(SOURCE), mtime(import.meta.path)]);
  if (built > source && built > script) return out;
  const tmp = `${out}.tmp-${process.pid}`;
  try {
    const proc = Bun.spawn(["gcc", ...SF_CFLAGS, "-o", tmp, SOURCE], { stdout: "pipe", stderr: "pipe" });
    const [err, code] = await Promise.all([new Response(proc.stderr).text(), proc.exited]);
    if (code !== 0) throw new Error(`sf (guest/xen) build failed (exit ${code}):\n${err}`);
    await rename(tmp, out);
  } finally {
    await rm(tmp, { force: true });
  }
  return out;
}

if (import.meta.main) {
  const out = await buildXenTool(join(import.meta.dir, "../build"));
  console.log(relative(process.cwd(), out) || out);
}
