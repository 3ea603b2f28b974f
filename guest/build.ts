// Builds the snowflock guest kernel with the host gcc.
//   bun guest/build.ts            -> guest/build/snowflock-guest.elf
//   import { buildGuest } from "./guest/build.ts"; await buildGuest(dir)
import { mkdir, rename, rm, stat } from "node:fs/promises";
import { availableParallelism } from "node:os";
import { join, relative } from "node:path";

const GUEST_DIR = import.meta.dir;
const ELF_NAME = "snowflock-guest.elf";

// No SSE/AVX/x87 and no red zone: the kernel takes interrupts on its own stack and
// the host KVM must never need to emulate vector instructions on our memory.
export const GUEST_CFLAGS = [
  "-std=gnu11", "-m64", "-ffreestanding", "-nostdlib", "-mno-red-zone",
  "-mno-sse", "-mno-sse2", "-mno-mmx", "-mno-avx", "-mgeneral-regs-only",
  "-fno-pic", "-fno-pie", "-fno-stack-protector", "-O2",
  "-fno-asynchronous-unwind-tables", "-fno-omit-frame-pointer", "-fcf-protection=none",
  "-Wall", "-Wextra", "-Wno-unused-parameter",
];

export const GUEST_LDFLAGS = [
  "-nostdlib", "-static", "-no-pie",
  "-Wl,-z,max-page-size=0x1000", "-Wl,--build-id=none", "-Wl,-z,noexecstack",
  "-Wl,--no-warn-rwx-segments",
];

async function run(cmd: string[]): Promise<void> {
  const proc = Bun.spawn(cmd, { cwd: GUEST_DIR, stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  if (code !== 0) {
    throw new Error(`guest build failed (exit ${code}): ${cmd.join(" ")}\n${out}${err}`);
  }
}

async function mtime(path: string): Promise<number> {
  try {
    return (await stat(path)).mtimeMs;
  } catch {
    return -1;
  }
}

async function listInputs(): Promise<{ sources: string[]; all: string[] }> {
  const sources: string[] = [];
  const all: string[] = [];
  for await (const f of new Bun.Glob("**/*.{c,S,h,ld,ts}").scan({ cwd: GUEST_DIR })) {
    // linux/ holds the tools for Linux guests, programs of their own (guest/linux/build.ts).
    if (f.startsWith("build/") || f.startsWith("node_modules/") || f.startsWith("linux/")) continue;
    all.push(f);
    if (f.endsWith(".c") || f.endsWith(".S")) sources.push(f);
  }
  sources.sort();
  return { sources, all };
}

// Unique temp names + rename keep concurrent builds into one outDir from clobbering
// each other's half-written files.
function tmpName(path: string): string {
  return `${path}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
}

export async function buildGuest(outDir: string): Promise<string> {
  const elf = join(outDir, ELF_NAME);
  const objDir = join(outDir, "obj");
  await mkdir(objDir, { recursive: true });
  const { sources, all } = await listInputs();

  // Up to date if the ELF is newer than every input (sources, headers, link.ld, this file).
  const elfTime = await mtime(elf);
  if (elfTime > 0) {
    const times = await Promise.all(all.map((f) => mtime(join(GUEST_DIR, f))));
    if (times.every((t) => t < elfTime)) return elf;
  }

  const objects = sources.map((s) => join(objDir, s.replace(/[\/.]/g, "_") + ".o"));
  const jobs = sources.map((src, i) => async () => {
    const obj = objects[i]!;
    const tmp = tmpName(obj);
    await run(["gcc", ...GUEST_CFLAGS, "-I", "include", "-c", src, "-o", tmp]);
    await rename(tmp, obj);
  });
  const width = Math.max(1, availableParallelism());
  let next = 0;
  const workers = Array.from({ length: Math.min(width, jobs.length) }, async () => {
    while (next < jobs.length) await jobs[next++]!();
  });
  await Promise.all(workers);

  const tmpElf = tmpName(elf);
  try {
    await run(["gcc", ...GUEST_LDFLAGS, "-T", "link.ld", "-o", tmpElf, ...objects]);
    await rename(tmpElf, elf);
  } finally {
    await rm(tmpElf, { force: true });
  }
  return elf;
}

if (import.meta.main) {
  const out = await buildGuest(join(GUEST_DIR, "build"));
  console.log(relative(process.cwd(), out) || out);
}
