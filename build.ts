/**
 * Builds everything: the WASM kernels (AssemblyScript), the guest kernel (gcc), and the single
 * executable dist/snowflock that embeds both. `bun run build`.
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { buildGuest } from "./guest/build.ts";
import { buildLinuxTools } from "./guest/linux/build.ts";
import { buildWasm } from "./wasm/build.ts";

/** Each Worker entry must be named to `bun build --compile`, or the executable cannot start it. */
const WORKER_ENTRYPOINTS = [
  "src/backend/kvm/vcpu-worker.ts",
  "src/backend/kvm/virtio/net-receive-worker.ts",
  "src/memory/memtap-worker.ts",
  "src/mcdist/server-worker.ts",
  "src/backend/xen/fork-worker.ts",
  "src/backend/xen/pager-worker.ts",
];

/** What `bun build --compile` makes the executable from: the CLI entry and every Worker entry (test/xen/build-baseline.ts builds the same). */
export const EXECUTABLE_ENTRYPOINTS = ["bin/snowflock.ts", ...WORKER_ENTRYPOINTS];

/** Runs one build step and prints how long it took. */
export async function step<T>(what: string, work: () => Promise<T> | T): Promise<T> {
  const started = performance.now();
  const result = await work();
  console.error(`  ${what} (${Math.round(performance.now() - started)} ms)`);
  return result;
}

/**
 * `--bytecode` ships the program compiled ahead: a process (a clone's VMM, a ready VMM, any CLI
 * call) starts without parsing it, ~16 ms for `--version` instead of ~50 here. ESM, for the
 * top-level await.
 */
const COMPILE_FLAGS = ["--compile", "--bytecode", "--format=esm", "--minify-whitespace", "--minify-syntax"];

async function compileExecutable(outfile: string): Promise<void> {
  const build = Bun.spawn([process.execPath, "build", ...COMPILE_FLAGS, ...EXECUTABLE_ENTRYPOINTS, "--outfile", outfile], {
    stdout: "pipe",
    stderr: "pipe",
  });
  const [out, err, code] = await Promise.all([new Response(build.stdout).text(), new Response(build.stderr).text(), build.exited]);
  if (code !== 0) throw new Error(`bun build --compile failed:\n${out}${err}`);
}

if (import.meta.main) {
  try {
    console.error("building snowflock");
    await step("WASM kernels -> wasm/build/", () => buildWasm(join(import.meta.dir, "wasm/build")));
    await step("guest kernel -> guest/build/snowflock-guest.elf", () => buildGuest(join(import.meta.dir, "guest/build")));
    await step("Linux guest tools -> guest/build/sf-linux, dataset-linux", () => buildLinuxTools(join(import.meta.dir, "guest/build")));
    mkdirSync("dist", { recursive: true });
    await step("executable -> dist/snowflock", () => compileExecutable("dist/snowflock"));
  } catch (error) {
    console.error(`build failed: ${(error as Error).message}`);
    process.exit(1);
  }
}
