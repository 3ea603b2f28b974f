/**
 * The domU tools (guest/xen) run here too, as plain Linux executables: `dataset` writes exactly the
 * stream src/guest/dataset.ts defines (the Xen tests check clones' digests against it), and `sf`
 * refuses bad exit arguments before it ever talks to XenStore.
 */
import { beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { buildXenTools } from "../../guest/xen/build.ts";
import { dataset } from "../../src/guest/dataset.ts";

let tools: Awaited<ReturnType<typeof buildXenTools>>;
beforeAll(async () => {
  tools = await buildXenTools(join(import.meta.dir, "../../guest/build"));
});

async function runTool(argv: string[]): Promise<{ status: number; stdout: Uint8Array; stderr: string }> {
  const child = Bun.spawn(argv, { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const [stdout, stderr, status] = await Promise.all([
    new Response(child.stdout).arrayBuffer(),
    new Response(child.stderr).text(),
    child.exited,
  ]);
  return { status, stdout: new Uint8Array(stdout), stderr };
}

test.each([
  [0n, 0],
  [0n, 1],
  [42n, 7],
  [42n, 4097],
  [7n, 200_000],
  [1n << 63n, 65_543],
])("dataset %p %p writes the host's splitmix64 bytes", async (seed, size) => {
  const r = await runTool([tools.dataset, String(seed), String(size)]);
  expect(r.status).toBe(0);
  expect(r.stdout).toEqual(dataset(seed, size));
});

test("dataset refuses bad arguments with its usage", async () => {
  for (const argv of [[], ["42"], ["x", "10"], ["42", "-1"], ["42", "10", "extra"]]) {
    const r = await runTool([tools.dataset, ...argv]);
    expect(r.status).toBe(2);
    expect(r.stderr).toBe("usage: dataset SEED BYTES (decimal)\n");
  }
});

test("sf exit refuses a bad status or an over-long result in one line, before any XenStore call", async () => {
  const cases: Array<[string[], string]> = [
    [["exit", "256"], "sf: bad exit status (give 0 to 255): 256\n"],
    [["exit", "0", "x".repeat(65)], `sf: result too long (at most 64 characters): ${"x".repeat(65)}\n`],
  ];
  for (const [argv, message] of cases) {
    const r = await runTool([tools.sf, ...argv]);
    expect(r.status).toBe(1);
    expect(r.stderr).toBe(message);
  }
  const usage = await runTool([tools.sf, "exit", "0", "a", "b"]);
  expect(usage.status).toBe(2);
  expect(usage.stderr).toContain("sf exit [STATUS [RESULT]]");
});
