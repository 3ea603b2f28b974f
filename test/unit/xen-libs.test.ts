/**
 * The Xen bindings' libraries: every symbol src/backend/xen/libs.ts declares exists in the
 * installed library (looked up, never called); importing the backend loads none of them; and on a
 * host without Xen, opening it is the one XEN_UNAVAILABLE line.
 *
 * The symbol check needs Xen's runtime libraries (Debian's libxen-dev pulls them in). Without
 * them it skips with one line — unless CI=true, where it fails.
 */
import { describe, expect, test } from "bun:test";
import { dlopen, type FFIFunction } from "bun:ffi";
import { XEN_RELEASES } from "../../src/backend/xen/abi.ts";
import { privcmdPath } from "../../src/backend/xen/detect.ts";
import { isXenUnavailable } from "../../src/backend/xen/errors.ts";
import { declaredSymbols } from "../../src/backend/xen/libs.ts";

const required = process.env.CI === "true";

/** Why the library cannot be loaded at all, or undefined when it can (a missing symbol is its own test). */
function notLoadable(soname: string, symbols: Record<string, FFIFunction>): string | undefined {
  const [name, declaration] = Object.entries(symbols)[0]!; // bun's dlopen wants at least one symbol
  try {
    dlopen(soname, { [name]: declaration }).close();
    return undefined;
  } catch (error) {
    return (error as { code?: string }).code === "ERR_DLOPEN_FAILED" ? (error as Error).message : undefined;
  }
}

for (const abi of Object.values(XEN_RELEASES)) {
  describe(`Xen ${abi.release} libraries`, () => {
    for (const library of declaredSymbols(abi)) {
      const missing = notLoadable(library.soname, library.symbols);
      if (missing && required) {
        test(`${library.soname} is installed (CI=true)`, () => {
          throw new Error(`CI=true but ${missing}; add libxen-dev to the CI image`);
        });
        continue;
      }
      if (missing) console.warn(`xen-libs: skipping ${library.soname} — ${missing}`);
      describe.skipIf(missing !== undefined)(`${library.soname}${missing ? " (skipped: not installed)" : ""}`, () => {
        for (const [symbol, declaration] of Object.entries(library.symbols)) {
          test(symbol, () => {
            // dlopen resolves every symbol it is given, and throws for one that is absent.
            const handle = dlopen(library.soname, { [symbol]: declaration });
            expect(typeof handle.symbols[symbol]).toBe("function");
            handle.close();
          });
        }
      });
    }
  });
}

test("importing the Xen backend and the doctor command loads no Xen library", async () => {
  const root = new URL("../..", import.meta.url).pathname;
  const script = [
    'await import("./src/backend/xen/host.ts");',
    'await import("./src/backend/xen/features.ts");',
    'await import("./src/cli/doctor.ts");',
    'const maps = await Bun.file("/proc/self/maps").text();',
    'console.log(JSON.stringify([...new Set(maps.split("\\n").filter((l) => /libxen|libxl/.test(l)).map((l) => l.split(" ").pop()))]));',
  ].join("\n");
  const child = Bun.spawnSync([process.execPath, "-e", script], { cwd: root, stdout: "pipe", stderr: "pipe" });
  expect(child.stderr.toString()).toBe("");
  expect(JSON.parse(child.stdout.toString())).toEqual([]);
});

describe.skipIf(privcmdPath() !== undefined)("without Xen", () => {
  test("openXen() is one XEN_UNAVAILABLE line naming the missing privcmd device", async () => {
    const { openXen } = await import("../../src/backend/xen/host.ts");
    let error: unknown;
    try {
      openXen().close();
    } catch (e) {
      error = e;
    }
    expect(isXenUnavailable(error)).toBe(true);
    const line = (error as { render(): string }).render();
    expect(line).not.toContain("\n");
    expect(line).toMatch(/\/dev\/xen\/privcmd is missing/);
  });
});
