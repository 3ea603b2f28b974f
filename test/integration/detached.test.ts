/** A detached VM is reached by name: ls, logs and kill go through its control socket. */
import { expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { snowflock, testRunDir } from "../support/cli.ts";
import { describeKvm } from "../support/kvm.ts";
import { waitUntil } from "../support/wait.ts";
import { ticks } from "../support/serve-ticks.ts";
import { within } from "../support/time.ts";

describeKvm("detached VMs", () => {
  test("run --detach, ls, logs, kill", async () => {
    const env = { SNOWFLOCK_RUN_DIR: testRunDir() };
    const started = await snowflock(["run", "serve", "--detach", "--name", "web", "--mem", "64M"], env);
    expect(started.status).toBe(0);
    expect(started.stdout).toBe("web\n");

    const second = await snowflock(["run", "serve", "--detach", "--name", "web"], env);
    expect(second.status).not.toBe(0);
    expect(second.stderr).toContain("a VM named 'web' is already running");

    // Its first two ticks (checked in its logs below), on a busy host (CI's nested hosts beside it) after a while.
    await waitUntil(async () => ticks((await snowflock(["logs", "web"], env)).stdout).length >= 2, within(10_000), "web has ticked twice");
    const ls = await snowflock(["ls", "--json"], env);
    expect(ls.status).toBe(0);
    const [vm, ...others] = JSON.parse(ls.stdout);
    expect(others).toHaveLength(0);
    expect(vm).toMatchObject({ name: "web", state: "running", workload: "serve", memoryBytes: 64 << 20, vcpus: 1 });
    expect(vm.consoleLines).toBeGreaterThan(0);
    expect(vm.pagesTouched).toBeGreaterThan(0);

    const table = await snowflock(["ls"], env);
    expect(table.stdout).toMatch(/^NAME\s+STATE\s+WORKLOAD/);
    expect(table.stdout).toMatch(/\nweb\s+running\s+serve/);

    const file = join(env.SNOWFLOCK_RUN_DIR, "web.sfd");
    const written = await snowflock(["descriptor", "web", "-o", file, "--json"], env);
    expect(written.status).toBe(0);
    const summary = JSON.parse(written.stdout);
    expect(summary).toMatchObject({ path: file, name: "web", cmdline: "serve", memoryBytes: 64 << 20, formatVersion: 1 });
    expect(summary.fileBytes).toBeLessThan((64 << 20) / 500);
    const inspected = await snowflock(["inspect", file, "--json"], env);
    expect(JSON.parse(inspected.stdout)).toMatchObject({ name: "web", pages: (64 << 20) / 4096, vcpus: [{ index: 0 }] });
    const bytes = new Uint8Array(await Bun.file(file).arrayBuffer());
    bytes[bytes.length - 1]! ^= 1;
    await Bun.write(file, bytes);
    const corrupted = await snowflock(["inspect", file], env);
    expect(corrupted.status).toBe(1);
    expect(corrupted.stderr).toContain("not a usable VM descriptor: checksum mismatch: the descriptor is corrupted");

    const logs = await snowflock(["logs", "web"], env);
    expect(logs.stdout).toMatch(/^tick 0 id 0\ntick 1 id 0\n/);

    const killed = await snowflock(["kill", "web"], env);
    expect(killed.status).toBe(0);
    expect(existsSync(join(env.SNOWFLOCK_RUN_DIR, "web.sock"))).toBe(false);
    expect(JSON.parse((await snowflock(["ls", "--json"], env)).stdout)).toEqual([]);

    const again = await snowflock(["kill", "web"], env);
    expect(again.status).not.toBe(0);
    expect(again.stderr).toContain("no running VM named 'web'");
    // The console log stays readable after the VM is gone.
    expect((await snowflock(["logs", "web"], env)).stdout).toStartWith("tick 0 id 0\n");
  });

  test("logs and kill of an unknown VM fail clearly", async () => {
    const env = { SNOWFLOCK_RUN_DIR: testRunDir() };
    const logs = await snowflock(["logs", "nope"], env);
    expect(logs.status).not.toBe(0);
    expect(logs.stderr.trim().split("\n")).toHaveLength(1);
    expect(logs.stderr).toContain("no console log for a VM named 'nope' (`snowflock ls` lists the running VMs)");
    const kill = await snowflock(["kill", "nope"], env);
    expect(kill.status).not.toBe(0);
    expect(kill.stderr).toContain("no running VM named 'nope'");
  });
});
