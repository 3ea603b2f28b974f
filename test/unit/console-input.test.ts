/**
 * `snowflock console NAME --send` and piped input: the bytes reach the VMM's control socket in
 * requests the UART's FIFO can take, waiting while the guest has not read; a guest that never
 * reads is an error after a bound, with what was taken. The VMM here is a stand-in control socket.
 */
import { describe, expect, test } from "bun:test";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { serveControl } from "../../src/vmm/control-server.ts";
import { vmPaths } from "../../src/run-dir.ts";
import { MAX_INPUT_BYTES } from "../../src/vmm/protocol.ts";
import { within } from "../support/time.ts";

const SNOWFLOCK = join(import.meta.dir, "../../bin/snowflock.ts");

/** A control socket for VM `name` whose UART takes at most `room` bytes per request (none when 0). */
function standIn(runDir: string, name: string, room: number) {
  const received: number[] = [];
  const sizes: number[] = [];
  const server = serveControl(vmPaths(name, runDir).socket, (request) => {
    if (request.op !== "input") return { ok: false, error: "unexpected" };
    const bytes = Buffer.from(request.data, "base64");
    sizes.push(bytes.byteLength);
    const taken = bytes.subarray(0, room);
    received.push(...taken);
    return { ok: true, accepted: taken.byteLength };
  });
  return { received, sizes, close: () => server.close() };
}

async function cli(runDir: string, args: string[], stdin?: Uint8Array) {
  const child = Bun.spawn([process.execPath, SNOWFLOCK, ...args], {
    env: { ...process.env, SNOWFLOCK_RUN_DIR: runDir },
    stdin: stdin ?? "ignore",
    stdout: "pipe",
    stderr: "pipe",
    timeout: within(60_000),
  });
  const [stdout, stderr, status] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
  return { stdout, stderr, status };
}

describe("snowflock console: typing at a VM", () => {
  test("--send types the line and its Enter; piped input goes as it is, in pieces the FIFO takes", async () => {
    const runDir = mkdtempSync(join(tmpdir(), "snowflock-console-"));
    const vm = standIn(runDir, "vm", 5);
    try {
      const sent = await cli(runDir, ["console", "vm", "--send", "uname -a", "--json"]);
      expect(sent.status, sent.stderr).toBe(0);
      expect(JSON.parse(sent.stdout)).toEqual({ name: "vm", sent: 9 });
      expect(Buffer.from(vm.received).toString()).toBe("uname -a\n");
      vm.received.length = 0;
      const big = new Uint8Array(MAX_INPUT_BYTES + 100).map((_, i) => 97 + (i % 26));
      const piped = await cli(runDir, ["console", "vm"], big);
      expect(piped.status, piped.stderr).toBe(0);
      expect(new Uint8Array(vm.received)).toEqual(big);
      expect(Math.max(...vm.sizes)).toBe(MAX_INPUT_BYTES);
    } finally {
      vm.close();
    }
  });

  test(
    "a guest that never reads its console: an error after the bound, saying how much it took",
    async () => {
      const runDir = mkdtempSync(join(tmpdir(), "snowflock-console-"));
      const vm = standIn(runDir, "deaf", 0);
      try {
        const result = await cli(runDir, ["console", "deaf", "--send", "ls"], undefined);
        expect(result.status).toBe(1);
        expect(result.stderr).toContain("VM 'deaf' took 0 of 3 bytes; its console has not read input for 10 s");
      } finally {
        vm.close();
      }
    },
    within(30_000),
  );

  test("an unknown VM", async () => {
    const result = await cli(mkdtempSync(join(tmpdir(), "snowflock-console-")), ["console", "nope", "--send", "ls"]);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain("no running VM named 'nope'");
  });
});
