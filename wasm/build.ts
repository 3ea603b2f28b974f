// Builds the WebAssembly kernels in wasm/ with the AssemblyScript compiler.
//
//   bun wasm/build.ts            # -> wasm/build/<kernel>.wasm
//
// or from another build script:
//
//   import { buildWasm } from "./wasm/build.ts";
//   await buildWasm("wasm/build");
//
// Every `*.ts` file directly in wasm/ except this one (and `*.d.ts`) is a
// kernel entry point and becomes `<outDir>/<name>.wasm`. The modules have no
// JS glue: they export their functions and `memory`, and import only
// `env.abort` (called by the allocator on a failed allocation).

import { mkdir, readdir, rename, rm } from "node:fs/promises";
import { basename, join, resolve } from "node:path";

const WASM_DIR = import.meta.dir;
const REPO_ROOT = resolve(WASM_DIR, "..");
const ASC = join(REPO_ROOT, "node_modules", "assemblyscript", "bin", "asc.js");

/**
 * Compiler flags shared by every kernel.
 * `--runtime minimal` brings in the TLSF allocator so kernels can export a
 * real alloc/free pair; no managed objects are used, so its GC stays unused.
 */
const ASC_FLAGS: readonly string[] = [
  "-O3",
  "--runtime", "minimal",
  "--noAssert",
];

/** Lists the kernel entry points (absolute paths), sorted by name. */
export async function listKernels(): Promise<string[]> {
  const entries = await readdir(WASM_DIR, { withFileTypes: true });
  return entries
    .filter((e) => e.isFile() && e.name.endsWith(".ts") && !e.name.endsWith(".d.ts") && e.name !== "build.ts")
    .map((e) => join(WASM_DIR, e.name))
    .sort();
}

async function compileKernel(source: string, outDir: string): Promise<string> {
  const name = basename(source, ".ts");
  const out = join(outDir, `${name}.wasm`);
  // Write to a temporary name and rename, so that a concurrent reader never
  // sees a half-written module.
  const tmp = join(outDir, `.${name}.${process.pid}.tmp.wasm`);
  const proc = Bun.spawn([process.execPath, ASC, source, ...ASC_FLAGS, "--outFile", tmp], {
    cwd: WASM_DIR,
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  if (code !== 0 || !(await Bun.file(tmp).exists())) {
    await rm(tmp, { force: true });
    const output = [stdout.trim(), stderr.trim()].filter((s) => s.length > 0).join("\n");
    throw new Error(`asc failed to compile ${source} (exit code ${code}):\n${output}`);
  }
  await rename(tmp, out);
  return out;
}

/**
 * Compiles every kernel in wasm/ into `<outDir>/<name>.wasm`.
 * Returns the absolute paths of the written modules. Rejects with the
 * compiler's output if any kernel fails to compile.
 */
export async function buildWasm(outDir: string): Promise<string[]> {
  const dir = resolve(outDir);
  await mkdir(dir, { recursive: true });
  const kernels = await listKernels();
  if (kernels.length === 0) throw new Error(`no kernels found in ${WASM_DIR}`);
  // Wait for every compile (even after a failure) so that no temporary file
  // is left behind, then report all failures at once.
  const results = await Promise.allSettled(kernels.map((k) => compileKernel(k, dir)));
  const failures = results.flatMap((r) => (r.status === "rejected" ? [r.reason] : []));
  if (failures.length > 0) {
    throw new Error(failures.map((e) => (e instanceof Error ? e.message : String(e))).join("\n\n"));
  }
  return results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
}

if (import.meta.main) {
  const outDir = join(WASM_DIR, "build");
  try {
    const started = performance.now();
    const outputs = await buildWasm(outDir);
    const ms = Math.round(performance.now() - started);
    for (const out of outputs) {
      console.log(`${out} (${Bun.file(out).size} bytes)`);
    }
    console.log(`built ${outputs.length} wasm kernel(s) in ${ms} ms`);
  } catch (err) {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  }
}
