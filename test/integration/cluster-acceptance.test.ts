/**
 * The multi-host acceptance run, with the compiled executable: four test hosts, sha256-par and
 * search-par spread over all of them, and a capture on the bridge that must agree with the
 * server's own counters about the page frames that crossed it.
 */
import { beforeAll, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { readInventory } from "../../src/cluster/inventory.ts";
import { countLines, dataset, sliceLines } from "../../src/guest/dataset.ts";
import { testRunDir } from "../support/cli.ts";
import { describeKvm } from "../support/kvm.ts";
import { describeNetns } from "../support/netns.ts";
import { useTestCluster } from "../support/test-cluster.ts";
import { lean, within } from "../support/time.ts";

const EXECUTABLE = join(import.meta.dir, "../../dist/snowflock");
const CAPTURE = join(import.meta.dir, "../support/bridge-capture.ts");
const PREFIX = `sfa${process.pid % 10000}`;
const runDir = testRunDir();
const inventoryPath = join(runDir, "cluster.json");

async function dist(args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  const child = Bun.spawn([EXECUTABLE, ...args], {
    env: { ...process.env, SNOWFLOCK_RUN_DIR: runDir },
    stdout: "pipe",
    stderr: "pipe",
    stdin: "ignore",
    timeout: within(180_000),
  });
  const [stdout, stderr, status] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
  return { status, stdout, stderr };
}

describeNetns("acceptance: dist/snowflock over four test hosts", () => {
  describeKvm("with KVM", () => {
    beforeAll(() => {
      if (!existsSync(EXECUTABLE)) throw new Error("dist/snowflock is missing: run `bun run build` first");
    });
    useTestCluster({ prefix: PREFIX, hosts: 4, runDir, cli: dist });

    // 64 MiB where KVM works; under emulation a quarter, as the nested host runs VMs 10-50 times slower.
    const shaSize = lean(64 << 20, 16 << 20);
    test(`sha256-par size=${shaSize >> 20}M seed=9 clones=8 --cluster: right digests, clones on all four hosts`, async () => {
      const r = await dist([
        "run",
        "sha256-par",
        `size=${shaSize}`,
        "seed=9",
        "clones=8",
        "--mem",
        "256M",
        "--cluster",
        inventoryPath,
        "--json",
      ]);
      expect(r.stderr).toBe("");
      expect(r.status).toBe(0);
      const result = JSON.parse(r.stdout);
      const expected = sliceLines(9n, shaSize, 8);
      expect(result.console).toEqual([...expected, "granted 8"]);
      expect(new Set(result.forks[0].clones.map((c: { host: string }) => c.host))).toEqual(new Set(["h1", "h2", "h3", "h4"]));
    });

    test(
      "search-par: right counts; 8 clones cost the server at most 1.5 x the bytes of 1; the bridge saw the " + "same AF_PACKET frames",
      async () => {
        const size = lean(16 << 20, 4 << 20);
        const data = dataset(9n, size);
        const counts = (clones: number) => countLines(9n, size, clones, data);
        const h1 = readInventory(inventoryPath).hosts[0]!;
        const searchPar = async (clones: number) => {
          const capture = Bun.spawn(["ip", "netns", "exec", `${PREFIX}-switch`, process.execPath, CAPTURE, `${PREFIX}-h1`, h1.mac], {
            stdout: "pipe",
            stderr: "pipe",
          });
          const reader = capture.stdout.getReader();
          expect(new TextDecoder().decode((await reader.read()).value)).toContain("ready");
          const r = await dist([
            "run",
            "search-par",
            `size=${size}`,
            "seed=9",
            `clones=${clones}`,
            // The clones read together however far apart they start (the claim is N cost about one).
            "together=1",
            "--mem",
            "64M",
            "--cluster",
            inventoryPath,
            "--transport",
            "packet",
            "--json",
          ]);
          capture.kill("SIGTERM");
          let captured = "";
          for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) captured += new TextDecoder().decode(chunk.value);
          expect(r.stderr).toBe("");
          const result = JSON.parse(r.stdout);
          expect(result.console).toEqual([...counts(clones), `granted ${clones}`]);
          return {
            stats: result.stats,
            clones: result.forks[0].clones as Array<{ host: string }>,
            captured: JSON.parse(captured.trim()) as { frames: number; bytes: number },
          };
        };
        const one = await searchPar(1);
        const eight = await searchPar(8);
        // The single clone runs on another host than the parent (the parent's host is used last).
        expect(one.clones.map((c) => c.host)).toEqual(["h2"]);
        expect(one.stats.serverBytesSent).toBeGreaterThan(size);
        expect(eight.stats.serverBytesSent).toBeLessThanOrEqual(1.5 * one.stats.serverBytesSent);
        for (const run of [one, eight]) {
          expect(run.captured.frames).toBe(run.stats.serverFramesSent);
          // Ethernet pads short frames, so the wire may carry a few bytes more, never fewer.
          expect(run.captured.bytes).toBeGreaterThanOrEqual(run.stats.serverBytesSent);
          expect(run.captured.bytes).toBeLessThanOrEqual(run.stats.serverBytesSent + 64 * run.captured.frames);
        }
      },
    );
  });
});
