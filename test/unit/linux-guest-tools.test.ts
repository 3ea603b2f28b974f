/**
 * The Linux guest tools (guest/linux) run here too, as plain Linux executables: `dataset` writes
 * exactly the stream src/guest/dataset.ts defines (the tests check clones' digests against it),
 * and `sf` refuses bad arguments before it ever talks to a host (XenStore or the KVM VMM's port).
 */
import { beforeAll, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { buildLinuxTools } from "../../guest/linux/build.ts";
import { dataset } from "../../src/guest/dataset.ts";

let tools: Awaited<ReturnType<typeof buildLinuxTools>>;
beforeAll(async () => {
  tools = await buildLinuxTools(join(import.meta.dir, "../../guest/build"));
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

test("sf exit refuses a bad status or result, and sf send a bad message, in one line, before any host call", async () => {
  const cases: Array<[string[], string]> = [
    [["exit", "0", "two words"], "sf: a result is made of 0-9 A-Z a-z . _ + -: two words\n"],
    [["send", "1", "x".repeat(129)], `sf: a message is 1 to 128 characters: ${"x".repeat(129)}\n`],
    [["send", "x", "hi"], "sf: bad family member (a clone ID, 0 for the parent): x\n"],
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

test("sf clone refuses a bad count or another heuristic in one line; with no snowflock host it fails before holding any memory", async () => {
  const cases: Array<[string[], string]> = [
    [["clone", "0"], "sf: bad clone count (give 1 to 64): 0\n"],
    [["clone", "--no-heuristic", "free-pages", "65"], "sf: bad clone count (give 1 to 64): 65\n"],
    [["clone", "--no-heuristic", "prefetch", "2"], "sf: sf clone can switch off only the free-pages heuristic, not prefetch\n"],
  ];
  for (const [argv, message] of cases) {
    const r = await runTool([tools.sf, ...argv]);
    expect(r.status).toBe(1);
    expect(r.stderr).toBe(message);
  }
  const usage = await runTool([tools.sf, "clone", "--no-heuristic", "2"]);
  expect(usage.status).toBe(2);
  expect(usage.stderr).toContain("sf clone [--no-heuristic free-pages] N");
  if (existsSync("/dev/xen/xenbus")) return console.log("this machine is a Xen domU: sf clone would ask a real agent");
  const outside = await runTool([tools.sf, "clone", "1"]);
  expect(outside.status).toBe(1);
  expect(outside.stderr).toBe(
    "sf: no snowflock host: not a VM of snowflock's KVM VMM, and no /dev/xen/xenbus (a Xen domU with xenfs/xenbus)\n",
  );
});
