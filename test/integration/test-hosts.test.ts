/**
 * `snowflock cluster up|status|down`: real network namespaces, veth pairs and a bridge, under a
 * prefix unique to this run so a user's own test cluster is never touched. All traffic stays in
 * 10.77.0.0/24 inside the namespaces.
 */
import { afterAll, expect, test } from "bun:test";
import { existsSync, readlinkSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { readInventory } from "../../src/cluster/inventory.ts";
import { linkInfo, listLinks, listNamespaces, probeReachable } from "../../src/cluster/netns.ts";
import { destroyTestHosts } from "../../src/cluster/test-hosts.ts";
import { snowflock, testRunDir } from "../support/cli.ts";
import { describeNetns } from "../support/netns.ts";
import { poolProcesses } from "../support/pool.ts";
import { waitUntil } from "../support/wait.ts";
import { within } from "../support/time.ts";

const PREFIX = `sft${process.pid % 1000}`;
const CRASHED = `sfu${process.pid % 1000}`;
const runDir = testRunDir();
const env = { SNOWFLOCK_RUN_DIR: runDir };
const inventoryPath = join(runDir, "cluster.json");
const ours = (prefix: string) => (name: string) => name === `${prefix}br0` || name.startsWith(`${prefix}-`);
const started: Array<{ kill(signal?: number): void }> = [];

function ipSync(args: string[]): void {
  const result = Bun.spawnSync(["ip", ...args], { stdout: "ignore", stderr: "pipe" });
  if (result.exitCode !== 0) throw new Error(`ip ${args.join(" ")}: ${result.stderr.toString().trim()}`);
}

describeNetns("test hosts (cluster up/status/down)", () => {
  afterAll(async () => {
    for (const child of started) child.kill(9);
    await destroyTestHosts(PREFIX, { inventoryPath: null }).catch(() => {});
    await destroyTestHosts(CRASHED, { inventoryPath: null }).catch(() => {});
  });

  test("up --hosts 3 --mtu 1400 builds namespaces, a bridge and the inventory", async () => {
    const up = await snowflock(
      ["cluster", "up", "--hosts", "3", "--mtu", "1400", "--pool", "1", "--prefix", PREFIX, "--inventory", inventoryPath, "--json"],
      env,
    );
    expect(up.stderr).toBe("");
    expect(up.status).toBe(0);
    const printed = JSON.parse(up.stdout);
    expect(printed).toMatchObject({
      inventory: inventoryPath,
      cluster: PREFIX,
      bridge: `${PREFIX}br0`,
      switchNamespace: `${PREFIX}-switch`,
      mtu: 1400,
    });
    expect(printed.secret).toBeUndefined();

    const namespaces = (await listNamespaces()).filter(ours(PREFIX)).sort();
    expect(namespaces).toEqual([`${PREFIX}-h1`, `${PREFIX}-h2`, `${PREFIX}-h3`, `${PREFIX}-switch`]);
    // Nothing was added to this machine's own namespace.
    expect((await listLinks(null)).map((l) => l.ifname).filter(ours(PREFIX))).toEqual([]);

    const inventory = readInventory(inventoryPath);
    expect(statSync(inventoryPath).mode & 0o777).toBe(0o600);
    expect(inventory).toMatchObject({ version: 1, cluster: PREFIX, bridge: `${PREFIX}br0`, mtu: 1400 });
    expect(inventory.secret).toMatch(/^[0-9a-f]{64}$/);
    expect(inventory.hosts).toHaveLength(3);
    const macs = new Set<string>();
    for (const [index, host] of inventory.hosts.entries()) {
      const i = index + 1;
      expect(host).toMatchObject({
        name: `h${i}`,
        namespace: `${PREFIX}-h${i}`,
        address: `10.77.0.${10 + i}`,
        interface: "eth0",
        agentPort: 7070,
      });
      expect(host.mac).toMatch(/^02:73:66:[0-9a-f]{2}:00:0[1-3]$/);
      macs.add(host.mac);
      const eth0 = await linkInfo(host.namespace, "eth0");
      expect(eth0).toMatchObject({ mtu: 1400, address: host.mac });
      expect(eth0!.flags).toContain("UP");
      expect(eth0!.flags).toContain("LOWER_UP");
      const lo = await linkInfo(host.namespace, "lo");
      expect(lo!.flags).toContain("UP");
      const addr = Bun.spawnSync(["ip", "-n", host.namespace!, "-4", "-o", "addr", "show", "dev", "eth0"]).stdout.toString();
      expect(addr).toContain(`inet ${host.address}/24`);
      const port = await linkInfo(`${PREFIX}-switch`, `${PREFIX}-h${i}`);
      expect(port).toMatchObject({ mtu: 1400 });
    }
    expect(macs.size).toBe(3);
    expect(await linkInfo(`${PREFIX}-switch`, `${PREFIX}br0`)).toMatchObject({ mtu: 1400 });

    // h1 → h3 inside the namespaces; an address nobody has does not answer.
    expect(await probeReachable(`${PREFIX}-h1`, "10.77.0.13")).toEqual({ ok: true });
    expect((await probeReachable(`${PREFIX}-h1`, "10.77.0.99", 1000)).ok).toBe(false);
  });

  test("each host's agent keeps its pool of ready VMMs (--pool)", async () => {
    for (const host of ["h1", "h2", "h3"]) {
      const hostEnv = { SNOWFLOCK_RUN_DIR: join(runDir, `${PREFIX}-${host}`) };
      await waitUntil(
        async () => JSON.parse((await snowflock(["pool", "--json"], hostEnv)).stdout).pool?.ready === 1,
        within(20_000),
        `${host}'s pool is filled`,
      );
      expect(poolProcesses(hostEnv.SNOWFLOCK_RUN_DIR).map((p) => p.role)).toEqual(["__ready"]);
    }
  });

  test("`snowflock pool` for a host resizes its agent's pool, in the host's network namespace", async () => {
    const host = `${PREFIX}-h2`;
    const hostEnv = { SNOWFLOCK_RUN_DIR: join(runDir, host) };
    const ended = await snowflock(["pool", "--clones", "0", "--json"], hostEnv);
    expect(ended.status).toBe(0);
    await waitUntil(() => poolProcesses(hostEnv.SNOWFLOCK_RUN_DIR).length === 0, within(10_000), "h2's pool is empty");
    // The agent still keeps the (empty) pool: it answers, and no daemon starts outside the namespace.
    const grown = await snowflock(["pool", "--clones", "2", "--json"], hostEnv);
    expect(grown.status).toBe(0);
    expect(JSON.parse(grown.stdout).pool).toMatchObject({ size: 2, ready: 2, packetInterface: "eth0" });
    const processes = poolProcesses(hostEnv.SNOWFLOCK_RUN_DIR);
    expect(processes.map((p) => p.role)).toEqual(["__ready", "__ready"]);
    const namespace = statSync(`/run/netns/${host}`).ino;
    for (const { pid } of processes) expect(readlinkSync(`/proc/${pid}/ns/net`)).toBe(`net:[${namespace}]`);
    expect((await snowflock(["pool", "--clones", "1"], hostEnv)).status).toBe(0);
  });

  test("status --json and the table report hosts, links and agents", async () => {
    const status = await snowflock(["cluster", "status", "--inventory", inventoryPath, "--json"], env);
    expect(status.status).toBe(0);
    const report = JSON.parse(status.stdout);
    expect(report).toMatchObject({ cluster: PREFIX, bridgeUp: true, mtu: 1400 });
    // `up` started an agent in every host.
    expect(
      report.hosts.map((h: { namespaceExists: boolean; interfaceUp: boolean; agent: string }) => [
        h.namespaceExists,
        h.interfaceUp,
        h.agent,
      ]),
    ).toEqual([
      [true, true, "listening"],
      [true, true, "listening"],
      [true, true, "listening"],
    ]);

    // An agent that is gone shows as such.
    const h3Pids = Bun.spawnSync(["ip", "netns", "pids", `${PREFIX}-h3`])
      .stdout.toString()
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
    expect(h3Pids.length).toBeGreaterThan(0);
    for (const pid of h3Pids) process.kill(pid, "SIGKILL");
    let agents: string[] = [];
    for (let i = 0; i < 100 && agents[2] !== "not started"; i++) {
      await Bun.sleep(50);
      const again = await snowflock(["cluster", "status", "--inventory", inventoryPath, "--json"], env);
      agents = JSON.parse(again.stdout).hosts.map((h: { agent: string }) => h.agent);
    }
    expect(agents).toEqual(["listening", "listening", "not started"]);

    const table = await snowflock(["cluster", "status", "--inventory", inventoryPath], env);
    expect(table.stdout).toMatch(/^HOST\s+NAMESPACE\s+ADDRESS\s+MAC\s+INTERFACE\s+NS EXISTS\s+UP\s+AGENT/);
    expect(table.stdout).toMatch(
      new RegExp(`\\nh2\\s+${PREFIX}-h2\\s+10\\.77\\.0\\.12\\s+02:73:66:[0-9a-f:]+\\s+eth0\\s+yes\\s+yes\\s+listening`),
    );
  });

  test("up refuses while the cluster exists", async () => {
    const again = await snowflock(["cluster", "up", "--hosts", "2", "--prefix", PREFIX, "--inventory", inventoryPath], env);
    expect(again.status).toBe(1);
    expect(again.stderr).toContain(`a cluster inventory already exists at ${inventoryPath} (cluster '${PREFIX}')`);
    expect(again.stderr).toContain("cluster down");

    const elsewhere = join(runDir, "other.json");
    const byName = await snowflock(["cluster", "up", "--hosts", "2", "--prefix", PREFIX, "--inventory", elsewhere], env);
    expect(byName.status).toBe(1);
    expect(byName.stderr).toContain(`a test cluster with prefix '${PREFIX}' already exists`);
    expect(byName.stderr).toContain(`cluster down --prefix ${PREFIX}`);
    expect(existsSync(elsewhere)).toBe(false);
    // The refusal changed nothing.
    expect((await listNamespaces()).filter(ours(PREFIX))).toHaveLength(4);
  });

  test("down removes namespaces, links, processes and the inventory", async () => {
    const down = await snowflock(["cluster", "down", "--inventory", inventoryPath, "--json"], env);
    expect(down.status).toBe(0);
    const report = JSON.parse(down.stdout);
    expect(report.prefix).toBe(PREFIX);
    expect(report.namespaces.sort()).toEqual([`${PREFIX}-h1`, `${PREFIX}-h2`, `${PREFIX}-h3`, `${PREFIX}-switch`]);
    expect(report.processes.length).toBeGreaterThanOrEqual(1);
    expect(report.inventory).toBe(inventoryPath);
    expect(existsSync(inventoryPath)).toBe(false);
    expect((await listNamespaces()).filter(ours(PREFIX))).toEqual([]);
    expect((await listLinks(null)).map((l) => l.ifname).filter(ours(PREFIX))).toEqual([]);
    const ipLinks = Bun.spawnSync(["ip", "link"]).stdout.toString();
    expect(ipLinks).not.toContain(PREFIX);
    // No agent's pooled process outlives it.
    await waitUntil(
      () => ["h1", "h2", "h3"].every((host) => poolProcesses(join(runDir, `${PREFIX}-${host}`)).length === 0),
      within(10_000),
      "no pooled process is left",
    );

    const twice = await snowflock(["cluster", "down", "--prefix", PREFIX, "--inventory", inventoryPath], env);
    expect(twice.status).toBe(0);
    expect(twice.stderr).toContain("nothing to remove");
  });

  test("down cleans up after a crash (half-made cluster)", async () => {
    ipSync(["link", "add", `${CRASHED}br0`, "type", "bridge"]);
    ipSync(["netns", "add", `${CRASHED}-h1`]);
    ipSync(["netns", "add", `${CRASHED}-switch`]);
    ipSync(["-n", `${CRASHED}-switch`, "link", "add", `${CRASHED}-h1`, "type", "veth", "peer", "name", "eth0", "netns", `${CRASHED}-h1`]);
    ipSync(["link", "add", `${CRASHED}-h2`, "type", "veth", "peer", "name", `${CRASHED}-h2x`]);
    // A process that ignores SIGTERM must still be ended.
    const stubborn = Bun.spawn(["ip", "netns", "exec", `${CRASHED}-h1`, "sh", "-c", "trap '' TERM; while :; do sleep 1; done"], {
      stdout: "ignore",
      stderr: "ignore",
    });
    started.push(stubborn);
    await Bun.sleep(200);

    const down = await snowflock(["cluster", "down", "--prefix", CRASHED, "--inventory", join(runDir, "none.json"), "--json"], env);
    expect(down.status).toBe(0);
    const report = JSON.parse(down.stdout);
    expect(report.namespaces.sort()).toEqual([`${CRASHED}-h1`, `${CRASHED}-switch`]);
    expect(report.links).toContain(`${CRASHED}br0`);
    expect(report.processes).toContain(stubborn.pid);
    expect(await stubborn.exited).not.toBe(0);
    expect((await listNamespaces()).filter(ours(CRASHED))).toEqual([]);
    expect(Bun.spawnSync(["ip", "link"]).stdout.toString()).not.toContain(CRASHED);
  });

  test("a malformed inventory gives a clear error", async () => {
    const broken = join(runDir, "broken.json");
    writeFileSync(broken, "{ not json");
    const notJson = await snowflock(["cluster", "status", "--inventory", broken], env);
    expect(notJson.status).toBe(1);
    expect(notJson.stderr).toContain(`cluster inventory ${broken} is not valid JSON`);

    const good = {
      version: 1,
      cluster: "x",
      secret: "ab".repeat(32),
      bridge: "xbr0",
      mtu: 1500,
      hosts: [{ name: "h1", namespace: "x-h1", address: "10.77.0.11", interface: "eth0", mac: "02:73:66:00:00:01", agentPort: 7070 }],
    };
    const cases: Array<[unknown, string]> = [
      [{ ...good, version: 2 }, "version must be 1, got 2"],
      [{ ...good, secret: "abc" }, "secret must be 64 lowercase hex characters"],
      [
        { ...good, hosts: [{ ...good.hosts[0], address: "10.77.0.300" }] },
        `hosts[0].address must be an IPv4 address like 10.77.0.11, got "10.77.0.300"`,
      ],
      [{ ...good, hosts: [{ ...good.hosts[0], mac: "nope" }] }, "hosts[0].mac must be a MAC address"],
      [{ ...good, hosts: [] }, "hosts must be a non-empty array"],
      [{ ...good, extra: true }, "'extra' is not a field of a version 1 inventory"],
    ];
    for (const [value, message] of cases) {
      writeFileSync(broken, JSON.stringify(value));
      const result = await snowflock(["cluster", "status", "--inventory", broken], env);
      expect(result.status).toBe(1);
      expect(result.stderr).toContain(`cluster inventory ${broken}: ${message}`);
    }
    const down = await snowflock(["cluster", "down", "--inventory", broken], env);
    expect(down.status).toBe(1);
    expect(down.stderr).toContain("pass --prefix");
    expect(existsSync(broken)).toBe(true);

    const missing = await snowflock(["cluster", "status", "--inventory", join(runDir, "missing.json")], env);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toContain("no cluster inventory at");
  });
});
