/**
 * The fork benchmark's guest (src/bench/bench-guest.ts): how snowflock and the QEMU peer boot it,
 * and when each one's console shows it ready, timed from the first byte.
 */
import { describe, expect, test } from "bun:test";
import { awaitConsole, consoleReady, QUIET_MS, runArguments } from "../../src/bench/bench-guest.ts";

const linux = { kind: "kernel" as const, kernel: "/boot/vmlinuz", initrd: "/tmp/job.cpio" };

describe("the fork benchmark's guest", () => {
  test("snowflock boots the built-in serve workload, or the kernel with its initrd and command line", () => {
    expect(runArguments({ kind: "builtin" })).toEqual(["run", "serve", "period=1000"]);
    expect(runArguments({ ...linux, cmdline: "console=ttyS0" })).toEqual([
      "run",
      "--kernel",
      "/boot/vmlinuz",
      "--initrd",
      "/tmp/job.cpio",
      "--cmdline",
      "console=ttyS0",
    ]);
    expect(runArguments(linux)).toContain("console=ttyS0 reboot=k panic=-1 pci=off quiet");
  });

  test("ready: a tick line; the given text; else a console that printed and went quiet", () => {
    expect(consoleReady({ kind: "builtin" }, "booting\n", 10_000)).toBe(false);
    expect(consoleReady({ kind: "builtin" }, "tick 0 id 0\n", 0)).toBe(true);
    expect(consoleReady({ ...linux, ready: "sf-shell#" }, "[ 0.1] Linux\n", 10_000)).toBe(false);
    expect(consoleReady({ ...linux, ready: "sf-shell#" }, "...\nsf-shell# ", 0)).toBe(true);
    expect(consoleReady(linux, "", 10_000)).toBe(false);
    expect(consoleReady(linux, "[ 0.1] Linux\n", QUIET_MS - 1)).toBe(false);
    expect(consoleReady(linux, "[ 0.1] Linux\n", QUIET_MS)).toBe(true);
  });

  test("awaitConsole returns when the first byte came; a guest that ends or never gets ready fails", async () => {
    const reads = ["", "", "tick", "tick 0 id 0\n"];
    let firstByteSeenBy = 0;
    const at = await awaitConsole(
      { kind: "builtin" },
      async () => {
        const text = reads.shift() ?? "tick 0 id 0\n";
        if (text && !firstByteSeenBy) firstByteSeenBy = performance.now();
        return text;
      },
      () => true,
      5000,
      "the guest",
    );
    expect(at).toBeLessThanOrEqual(firstByteSeenBy + 1);
    await expect(
      awaitConsole(
        { kind: "builtin" },
        async () => "",
        () => false,
        5000,
        "the guest",
      ),
    ).rejects.toThrow("the guest ended before its console showed it ready");
    await expect(
      awaitConsole(
        { kind: "builtin" },
        async () => "boot",
        () => true,
        50,
        "the guest",
      ),
    ).rejects.toThrow("the guest's console did not show it ready within 0.05 s; it ends: boot");
  });
});
