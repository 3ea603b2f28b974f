/**
 * dist/snowflock-baseline: the same single executable as `bun run build`'s dist/snowflock, on
 * Bun's "baseline" runtime (bun-linux-x64-baseline), which runs without AVX2. The nested Xen host
 * (test/xen) needs it: Xen boots under QEMU only with `-cpu qemu64,...`, a CPU without AVX2, and
 * the ordinary runtime stops there with SIGILL.
 *
 *   bun test/xen/build-baseline.ts
 *
 * The entrypoints are read from build.ts (the CLI and every Worker entry, which `bun build
 * --compile` must be told about), so the two executables cannot drift apart. The WASM kernels
 * and the guest kernel it embeds are built as build.ts builds them (each only when stale). The
 * runtime comes from the npm registry through test/xen/bun-baseline.sh, cached in the Xen host's
 * cache dir, and is handed to `bun build` with --compile-executable-path (nothing else downloads).
 */
import { existsSync, mkdirSync, renameSync, rmSync, statSync } from "node:fs";
import { basename, join } from "node:path";
import { EXECUTABLE_ENTRYPOINTS, step } from "../../build.ts";
import { buildGuest } from "../../guest/build.ts";
import { buildWasm, listKernels } from "../../wasm/build.ts";

const ROOT = join(import.meta.dir, "../..");
const OUT = join(ROOT, "dist/snowflock-baseline");

/** The CLI entry and the Worker entries, as build.ts passes them to `bun build --compile`. */
function entrypoints(): string[] {
  for (const entry of EXECUTABLE_ENTRYPOINTS)
    if (!existsSync(join(ROOT, entry))) throw new Error(`build.ts names ${entry}, which does not exist`);
  return EXECUTABLE_ENTRYPOINTS;
}

const mtime = (path: string) => (existsSync(path) ? statSync(path).mtimeMs : 0);

async function wasmIsStale(outDir: string): Promise<boolean> {
  const kernels = await listKernels();
  return kernels.some((k) => mtime(k) >= mtime(join(outDir, `${basename(k, ".ts")}.wasm`)));
}

function baselineRuntime(): string {
  const r = Bun.spawnSync(["bash", join(import.meta.dir, "bun-baseline.sh")], {
    stdout: "pipe",
    stderr: "inherit",
    env: { ...process.env, SNOWFLOCK_XEN_BUN_VERSION: process.env.SNOWFLOCK_XEN_BUN_VERSION ?? Bun.version },
  });
  if (r.exitCode !== 0) throw new Error("test/xen/bun-baseline.sh could not provide the baseline runtime");
  return r.stdout.toString().trim();
}

async function compile(runtime: string, entries: string[]): Promise<void> {
  const tmp = `${OUT}.tmp-${process.pid}`;
  const build = Bun.spawn(
    [
      process.execPath,
      "build",
      "--compile",
      "--target=bun-linux-x64-baseline",
      `--compile-executable-path=${runtime}`,
      "--minify-whitespace",
      "--minify-syntax",
      ...entries,
      "--outfile",
      tmp,
    ],
    { cwd: ROOT, stdout: "pipe", stderr: "pipe" },
  );
  const [out, err, code] = await Promise.all([new Response(build.stdout).text(), new Response(build.stderr).text(), build.exited]);
  if (code !== 0) {
    rmSync(tmp, { force: true });
    throw new Error(`bun build --compile --target=bun-linux-x64-baseline failed:\n${out}${err}`);
  }
  renameSync(tmp, OUT);
}

if (import.meta.main) {
  try {
    console.error("building dist/snowflock-baseline");
    const entries = entrypoints();
    const wasmDir = join(ROOT, "wasm/build");
    if (await wasmIsStale(wasmDir)) await step("WASM kernels -> wasm/build/", () => buildWasm(wasmDir));
    await step("guest kernel -> guest/build/snowflock-guest.elf", () => buildGuest(join(ROOT, "guest/build")));
    const runtime = await step("baseline runtime (bun-linux-x64-baseline)", baselineRuntime);
    mkdirSync(join(ROOT, "dist"), { recursive: true });
    await step(`executable -> dist/snowflock-baseline (${entries.join(" ")})`, () => compile(runtime, entries));
  } catch (error) {
    console.error(`build failed: ${(error as Error).message}`);
    process.exit(1);
  }
}
