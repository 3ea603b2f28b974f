/**
 * Clones on many hosts: test hosts in real network namespaces, one real agent in each, and VMs
 * whose clones run on other hosts, their memory fetched over the test network and their results
 * sent back through the agents. Everything stays inside 10.77.0.0/24 in the namespaces.
 */
import { expect, test } from "bun:test";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { readInventory } from "../../src/cluster/inventory.ts";
import { listNamespaces } from "../../src/cluster/netns.ts";
import { countLines, sliceLines } from "../../src/guest/dataset.ts";
import { awaitCloneTicks, ticks } from "../support/serve-ticks.ts";
import { snowflock, testRunDir } from "../support/cli.ts";
import { describeKvm } from "../support/kvm.ts";
import { describeNetns } from "../support/netns.ts";
import { useTestCluster } from "../support/test-cluster.ts";
import { lean, within } from "../support/time.ts";

const PREFIX = `sfc${process.pid % 10000}`;
const runDir = testRunDir();
const env = { SNOWFLOCK_RUN_DIR: runDir };
const inventoryPath = join(runDir, "cluster.json");

/** Runs a short Bun script inside a test host's namespace and returns what it printed. */
function insideHost(host: number, script: string): { status: number; stdout: string; stderr: string } {
  const r = Bun.spawnSync(["ip", "netns", "exec", `${PREFIX}-h${host}`, process.execPath, "-e", script], {
    stdout: "pipe",
    stderr: "pipe",
    timeout: 20_000,
  });
  return { status: r.exitCode ?? -1, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

describeNetns("clones on many hosts", () => {
  describeKvm("over test hosts", () => {
    useTestCluster({ prefix: PREFIX, hosts: 3, runDir, cli: (args) => snowflock(args, env) });

    test("cluster up starts an agent on every host", async () => {
      const status = JSON.parse((await snowflock(["cluster", "status", "--inventory", inventoryPath, "--json"], env)).stdout);
      expect(status.hosts.map((h: { name: string; agent: string }) => [h.name, h.agent])).toEqual([
        ["h1", "listening"],
        ["h2", "listening"],
        ["h3", "listening"],
      ]);
    });

    test("sha256-par --cluster: clones on every host, slices equal the host's digests, pages fetched over the network", async () => {
      const size = lean(16 << 20, 4 << 20);
      const r = await snowflock(
        ["run", "sha256-par", `size=${size}`, "seed=7", "clones=6", "--mem", "128M", "--cluster", inventoryPath, "--json"],
        env,
        120_000,
      );
      expect(r.stderr).toBe("");
      expect(r.status).toBe(0);
      const result = JSON.parse(r.stdout);
      expect(result.console).toEqual([...sliceLines(7n, size, 6), "granted 6"]);
      const clones = result.forks[0].clones as Array<{ name: string; cloneId: number; host: string }>;
      expect(result.forks[0].failed).toEqual([]);
      expect(clones.map((c) => c.cloneId)).toEqual([1, 2, 3, 4, 5, 6]);
      expect(new Set(clones.map((c) => c.host))).toEqual(new Set(["h1", "h2", "h3"]));
      // Clones on h2 and h3 took every page they read from h1's memory server.
      expect(result.stats.pagesFetched).toBeGreaterThan(4 * (size / 6 / 4096) * 0.9);
      // The four remote slices are distinct pages, each sent at least once. (Not pagesFetched * 4096:
      // a page two clones asked for may go out once, by multicast, and at MTU 9000 framing adds
      // too little to hide that.)
      expect(result.stats.serverBytesSent).toBeGreaterThanOrEqual(4 * (size / 6) * 0.9);
    });

    // Clones on different hosts start apart (their orders, their agents, a busy core: 0.4-1.6 s
    // after the fork here while the nested hosts of CI ran, more while CI built them): the first
    // host's clones could read every page before the last host's began, and each page went out
    // again for those (2x). The claim is about clones reading together: `together=1` holds each
    // clone until all run, and 16 MiB outlasts what is left of the spread (the go messages).
    const searchSize = lean(16 << 20, 1 << 20);
    const expectedCounts = (clones: number) => countLines(9n, searchSize, clones);
    const searchPar = async (transport: string) => {
      const r = await snowflock(
        [
          "run",
          "search-par",
          `size=${searchSize}`,
          "seed=9",
          "clones=6",
          "together=1",
          "--mem",
          "64M",
          "--cluster",
          inventoryPath,
          "--transport",
          transport,
          "--json",
        ],
        env,
        120_000,
      );
      expect(r.stderr).toBe("");
      const result = JSON.parse(r.stdout);
      // One comparison, so a failure shows the clones that failed and why.
      expect({ status: r.status, console: result.console, failed: result.forks[0].failed }).toEqual({
        status: 0,
        console: [...expectedCounts(6), "granted 6"],
        failed: [],
      });
      return result.stats as {
        serverBytesSent: number;
        pagesFetched: number;
        pagesMulticast: number;
        hosts: Record<string, { clones: number; bytesReceived: number }>;
      };
    };

    // Every clone reads the whole dataset: with unicast each remote clone costs the server its
    // pages; with mcdist the server sends them about once for all.
    let unicastBytesPerRemoteClone = 0;
    test("search-par --cluster --transport tcp: every clone's count equals the host's", async () => {
      const stats = await searchPar("tcp");
      expect(stats.pagesMulticast).toBe(0);
      expect(stats.hosts.h2!.bytesReceived).toBeGreaterThan(searchSize);
      unicastBytesPerRemoteClone = stats.serverBytesSent / (stats.hosts.h2!.clones + stats.hosts.h3!.clones);
    });

    // Four remote clones by unicast cost 4x; by multicast about 1x on a quiet host. On a busy one
    // the clones fall behind: udp cannot tell a frame dropped from a late one (no drop counter on
    // its path), and over packet a clone behind sheds its siblings' frames unread, then asks for
    // those pages itself (1.52x in a CI run beside the nested hosts' boot; 1.18-1.33x in 2 of 4 runs
    // here beside them, with the HMAC page tags of before too). Both stay at half of unicast's cost.
    for (const [transport, bound] of [
      ["packet", 2],
      ["udp", 2],
    ] as const) {
      test(`search-par --cluster --transport ${transport}: same counts, and the server sends each page about once for all remote clones`, async () => {
        const stats = await searchPar(transport);
        expect(unicastBytesPerRemoteClone).toBeGreaterThan(0);
        expect(stats.pagesMulticast).toBeGreaterThan(0);
        expect(stats.serverBytesSent).toBeLessThanOrEqual(bound * unicastBytesPerRemoteClone);
        expect(stats.hosts.h2!.bytesReceived).toBeGreaterThan(searchSize);
      });
    }

    test(
      "isolation --cluster: the parent messages a clone on one host, which messages a clone on another; " + "each kept its own memory",
      async () => {
        const r = await snowflock(["run", "isolation", "--mem", "32M", "--cluster", inventoryPath, "--json"], env, 120_000);
        expect(r.stderr).toBe("");
        const result = JSON.parse(r.stdout);
        expect(result.console.sort()).toEqual(["isolation clone 1 saw 1000", "isolation clone 2 saw 1000", "isolation parent sees 3000"]);
        expect(result.forks[0].clones.map((c: { cloneId: number; host: string }) => [c.cloneId, c.host])).toEqual([
          [1, "h2"],
          [2, "h3"],
        ]);
        expect(r.status).toBe(0);
      },
    );

    test("fork --cluster of a detached serve VM: clones on other hosts carry on with their own IDs", async () => {
      expect((await snowflock(["run", "serve", "--detach", "--name", "web", "--mem", "64M", "--cluster", inventoryPath], env)).status).toBe(
        0,
      );
      const forked = await snowflock(["fork", "web", "--clones", "3", "--cluster", "--json"], env, 60_000);
      expect(forked.stderr).toBe("");
      const result = JSON.parse(forked.stdout);
      expect(result.failed).toEqual([]);
      // The parent's own host comes last.
      expect(result.clones.map((c: { name: string; host: string }) => [c.name, c.host])).toEqual([
        ["web.1", "h2"],
        ["web.2", "h3"],
        ["web.3", "h1"],
      ]);
      for (const i of [1, 2, 3]) {
        const own = await awaitCloneTicks(`web.${i}`, env, 3, within(10_000));
        expect(own.length).toBeGreaterThanOrEqual(3);
        expect(own.every((l) => l.endsWith(` id ${i}`))).toBe(true);
      }
      const status = JSON.parse((await snowflock(["cluster", "status", "--inventory", inventoryPath, "--json"], env)).stdout);
      expect(status.hosts.map((h: { name: string; vms: string[] }) => [h.name, h.vms.sort()])).toEqual([
        ["h1", ["web", "web.3"]],
        ["h2", ["web.1"]],
        ["h3", ["web.2"]],
      ]);
      const listed = JSON.parse((await snowflock(["ls", "--json"], env)).stdout) as Array<{ name: string; host?: string; parent?: string }>;
      expect(listed.map((v) => [v.name, v.host, v.parent ?? null]).sort()).toEqual([
        ["web", "h1", null],
        ["web.1", "h2", "web"],
        ["web.2", "h3", "web"],
        ["web.3", "h1", "web"],
      ]);
      // A fork the hosts have no room for fails (the hosts' room is surveyed while the parent is
      // captured) and loses nothing: the parent ticks on, its clones stay.
      const tooMany = await snowflock(["fork", "web", "--clones", "60", "--cluster"], env, 60_000);
      expect(tooMany.status).not.toBe(0);
      expect(tooMany.stderr).toMatch(/the cluster has room for \d+ more clone\(s\) of web, not 60/);
      const parentTicks = ticks((await snowflock(["logs", "web"], env)).stdout).length;
      let later = parentTicks;
      for (const deadline = Date.now() + 10_000; later <= parentTicks && Date.now() < deadline; await Bun.sleep(100))
        later = ticks((await snowflock(["logs", "web"], env)).stdout).length;
      expect(later).toBeGreaterThan(parentTicks);
      expect(readdirSync(runDir).filter((f) => f.startsWith("web.clones-"))).toEqual([]);
      expect((JSON.parse((await snowflock(["ls", "--json"], env)).stdout) as Array<{ name: string }>).map((v) => v.name).sort()).toEqual([
        "web",
        "web.1",
        "web.2",
        "web.3",
      ]);
      expect((await snowflock(["kill", "web"], env)).status).toBe(0);
      expect(JSON.parse((await snowflock(["ls", "--json"], env)).stdout)).toEqual([]);
    });

    test("an agent refuses a request not signed with the cluster's secret", () => {
      const inventory = readInventory(inventoryPath);
      const h1 = inventory.hosts[0]!;
      const header = {
        v: 2,
        op: "clone",
        host: "h1",
        ts: Date.now(),
        nonce: "00".repeat(16),
        bodyBytes: 2,
        bodySha256: "00".repeat(32),
        mac: "11".repeat(32),
      };
      const script = `
        const socket = await Bun.connect({ hostname: "${h1.address}", port: ${h1.agentPort}, socket: {
          open(s) { s.write(${JSON.stringify(`${JSON.stringify(header)}\n{}`)}); },
          data(s, chunk) { console.log(chunk.toString().trim()); process.exit(0); },
          close() { process.exit(3); },
        }});
        setTimeout(() => process.exit(4), 5000);`;
      const r = insideHost(2, script);
      expect(r.status).toBe(0);
      expect(JSON.parse(r.stdout)).toEqual({ ok: false, error: "unauthenticated: the request is not signed with this cluster's secret" });
    });

    test("cluster down leaves no namespace, process, run directory or inventory behind", async () => {
      expect((await snowflock(["cluster", "down", "--inventory", inventoryPath], env)).status).toBe(0);
      expect((await listNamespaces()).filter((n) => n.startsWith(`${PREFIX}-`))).toEqual([]);
      expect(existsSync(inventoryPath)).toBe(false);
      expect(readdirSync(runDir).filter((f) => f.startsWith(PREFIX))).toEqual([]);
    });
  });
});
