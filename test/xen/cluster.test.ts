/**
 * Xen hosts in a cluster (`bun run test:xen:stock` boots two: run.sh with SNOWFLOCK_XEN_HOSTS=2).
 * This dom0 is host h1 of the inventory at $SNOWFLOCK_XEN_CLUSTER; h2 is a second nested Xen host
 * whose dom0 runs `snowflock agent --backend xen --host h2` (test/xen/member-host.sh); the two
 * share one private L2 segment (a bridge in a network namespace of the run), which each dom0's
 * bridge sfbr0 joins. Checked here: every host's agent answers a signed hello across the segment
 * (`cluster status` of real hosts), a request signed with another secret is refused, a domU
 * whose vif is on sfbr0 reaches the other host over it, and `fork --cluster` starts a clone on
 * the other host from a signed order (eager memory from the fork's memory server).
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { openSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { agentRequest } from "../../src/cluster/agent-client.ts";
import { readInventory } from "../../src/cluster/inventory.ts";
import type { AgentHello } from "../../src/cluster/agent.ts";
import { expectForkResult } from "../support/fork-result-shape.ts";
import { writeTestDomU } from "./support/domu.ts";
import { BINARY, bootDomU, consoleText, describeXen, diagnosis, ROOT, run, waitFor } from "./support/xen-test.ts";

const INVENTORY = process.env.SNOWFLOCK_XEN_CLUSTER;
const THIS_HOST = process.env.SNOWFLOCK_XEN_HOST;
/** The stock host's run has the second host; the paging host runs alone. */
const PAGING_HOST = process.env.SNOWFLOCK_REQUIRE_PAGING === "1";
const WORK = "/tmp/snowflock-xen-cluster-test";
const PINGER = "sfping";
/** The pinging domU's address on the hosts' segment (the dom0s have 10.77.0.11 and up). */
const PINGER_ADDRESS = "10.77.0.50";
const AGENTS_MS = 300_000;
const FORK_MS = 600_000;
const SF = join(ROOT, "guest/build/sf-xen");
const BOOT_MS = 300_000;

/** The start of a test domU's /init with its network frontend. */
const NETWORKED_DOMU = `#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
insmod /lib/modules/xen-netfront.ko
`;

const PINGER_INIT = `${NETWORKED_DOMU}busybox ip link set eth0 up
busybox ip addr add ${PINGER_ADDRESS}/24 dev eth0
echo "snowflock-domu: up"
target=$(sed -n 's/.*sfping=\\([0-9.]*\\).*/\\1/p' /proc/cmdline)
i=0
while [ $i -lt 60 ]; do
  i=$((i + 1))
  if busybox ping -c 1 -W 2 "$target" >/dev/null 2>&1; then echo "snowflock-domu: reached $target"; break; fi
done
[ $i -ge 60 ] && echo "snowflock-domu: $target unreachable"
while :; do sleep 60; done
`;

/** The spread fork's domU: it prints its clone ID every second and reports it to this dom0 over the segment. */
const SPAN = "sfspan";
const REPORT_PORT = 7171;
const SPAN_INIT = `${NETWORKED_DOMU}report_to=$(sed -n 's/.*sfreport=\\([0-9.]*\\).*/\\1/p' /proc/cmdline)
echo "snowflock-domu: up"
last=
i=0
while :; do
  i=$((i + 1))
  id=$(sf id)
  if [ "$id" != "$last" ]; then
    # A clone's own MAC (its vif has it) and an address after its clone ID.
    last=$id
    mac=$(sf read snowflock/mac 2>/dev/null)
    busybox ip link set eth0 down
    [ -n "$mac" ] && busybox ip link set eth0 address "$mac"
    busybox ip addr flush dev eth0
    busybox ip addr add 10.77.0.$((60 + id))/24 dev eth0
    busybox ip link set eth0 up
  fi
  echo "snowflock-domu: tick $i id $id"
  echo "id $id tick $i" | busybox nc -w 1 "$report_to" ${REPORT_PORT} >/dev/null 2>&1
  sleep 1
done
`;

const clusterSkip = (): string | undefined => {
  if (PAGING_HOST) return "paging host: the cluster of Xen hosts runs on the stock hosts";
  if (INVENTORY === undefined) {
    // In CI the stock run always has its second host: then a missing inventory is a failure.
    if (process.env.SNOWFLOCK_REQUIRE_XEN === "1") throw new Error("SNOWFLOCK_XEN_CLUSTER is not set: run with SNOWFLOCK_XEN_HOSTS=2");
    return "a single Xen host (run.sh with SNOWFLOCK_XEN_HOSTS=2 makes a cluster)";
  }
  return undefined;
};

describeXen("Xen hosts in a cluster: agents across the hosts' private segment, domUs on it", () => {
  let agent: ReturnType<typeof Bun.spawn> | undefined;
  let skip: string | undefined;

  beforeAll(async () => {
    skip = clusterSkip();
    if (skip) return;
    await run(["mkdir", "-p", WORK]);
    // This host's own agent: the guests' sf requests and the cluster's control plane.
    agent = Bun.spawn([BINARY, "agent", "--backend", "xen", "--host", THIS_HOST ?? "h1", "--inventory", INVENTORY!], {
      cwd: ROOT,
      stdin: "ignore",
      stdout: openSync(join(WORK, "agent.log"), "a"),
      stderr: openSync(join(WORK, "agent.err"), "a"),
    });
  });

  afterAll(async () => {
    agent?.kill();
    report?.stop(true);
    for (const d of [PINGER, SPAN, `${SPAN}.1`, `${SPAN}.2`]) await run(["xl", "destroy", d]);
  });

  /** Lines the domUs reported to this dom0 over the segment ("id I tick N"), by clone ID. */
  const reported = new Map<string, number>();
  let report: { stop(closeActiveConnections?: boolean): void } | undefined;

  const agentOutput = () => ["agent.log", "agent.err"].map((f) => readFileSync(join(WORK, f), "utf8")).join("");

  test(
    "cluster status: every host's agent answers a signed hello over the segment, each a xen host",
    async () => {
      if (skip) return console.log(skip);
      const hosts = readInventory(INVENTORY!).hosts;
      expect(hosts.length).toBeGreaterThanOrEqual(2);
      let status: { hosts: Array<{ name: string; agent: string; hello?: { backend: string; host: string }; problem?: string }> } = {
        hosts: [],
      };
      const answering = () => status.hosts.filter((h) => h.agent === "answering").length;
      await waitFor(
        "every agent to answer",
        () => {
          const r = Bun.spawnSync([BINARY, "cluster", "status", "--json", "--inventory", INVENTORY!], { cwd: ROOT });
          if (r.exitCode === 0) status = JSON.parse(r.stdout.toString());
          return answering() === hosts.length;
        },
        AGENTS_MS,
      ).catch((error) => {
        throw new Error(`${(error as Error).message}\n${JSON.stringify(status, null, 2)}\nagent: ${agentOutput()}`);
      });
      expect(status.hosts.map((h) => [h.name, h.agent, h.hello?.host, h.hello?.backend])).toEqual(
        hosts.map((h) => [h.name, "answering", h.name, "xen"]),
      );
    },
    AGENTS_MS + 30_000,
  );

  test("a request signed with another secret is refused by the other host's agent", async () => {
    if (skip) return console.log(skip);
    const other = readInventory(INVENTORY!).hosts.find((h) => h.name !== THIS_HOST)!;
    const target = { host: other.name, address: other.address, port: other.agentPort };
    await expect(agentRequest(target, "0".repeat(64), "hello")).rejects.toThrow(/refused|did not answer/);
  });

  test(
    "a domU whose vif is on sfbr0 reaches the other host's dom0 over the segment",
    async () => {
      if (skip) return console.log(skip);
      const other = readInventory(INVENTORY!).hosts.find((h) => h.name !== THIS_HOST)!;
      const config = writeTestDomU(WORK, [{ path: "init", data: PINGER_INIT, mode: 0o755 }], ["vif = ['bridge=sfbr0']"]);
      await bootDomU(
        PINGER,
        [config, `extra="console=hvc0 quiet sfping=${other.address}"`],
        () => consoleText(PINGER).includes("snowflock-domu: up"),
        BOOT_MS,
      );
      await waitFor(`${PINGER} to ping ${other.address}`, () => /reached|unreachable/.test(consoleText(PINGER)), BOOT_MS, [PINGER]);
      if (!consoleText(PINGER).includes(`reached ${other.address}`))
        throw new Error(`no answer from ${other.name}\n${await diagnosis([PINGER])}`);
    },
    2 * BOOT_MS + 30_000,
  );

  test(
    "fork sfspan --clones 2 --cluster: clone 1 starts on the other host from a signed order, clone 2 here; both run their own IDs and reach this dom0 with their own MAC and address",
    async () => {
      if (skip) return console.log(skip);
      const inventory = readInventory(INVENTORY!);
      const here = inventory.hosts.find((h) => h.name === THIS_HOST)!;
      const other = inventory.hosts.find((h) => h.name !== THIS_HOST)!;
      report = Bun.listen({
        hostname: here.address,
        port: REPORT_PORT,
        socket: {
          data(_socket, data) {
            for (const m of data.toString().matchAll(/id (\d+) tick/g)) reported.set(m[1]!, (reported.get(m[1]!) ?? 0) + 1);
          },
        },
      });
      const spanWork = join(WORK, "span");
      await run(["mkdir", "-p", spanWork]);
      const config = writeTestDomU(
        spanWork,
        [
          { path: "init", data: SPAN_INIT, mode: 0o755 },
          { path: "bin/sf", data: readFileSync(SF), mode: 0o755 },
        ],
        ["vif = ['bridge=sfbr0']"],
      );
      await bootDomU(
        SPAN,
        [config, `extra="console=hvc0 quiet sfreport=${here.address}"`],
        () => /tick \d+ id 0/.test(consoleText(SPAN)),
        BOOT_MS,
      );
      const r = await run(
        [BINARY, "fork", SPAN, "--clones", "2", "--cluster", "--inventory", INVENTORY!, "--backend", "xen", "--json"],
        FORK_MS,
      );
      if (r.status !== 0)
        throw new Error(`fork --cluster failed (${r.status}): ${r.stderr}\nagent: ${agentOutput()}\n${await diagnosis([SPAN])}`);
      const result = JSON.parse(r.stdout);
      expectForkResult(result, "xen");
      // Placement deals the other hosts first, the parent's own host last.
      expect(result.clones.map((c: { name: string; cloneId: number; host: string }) => [c.name, c.cloneId, c.host])).toEqual([
        [`${SPAN}.1`, 1, other.name],
        [`${SPAN}.2`, 2, here.name],
      ]);
      expect(result.failed).toEqual([]);
      // The other host fetched the parent's memory once: its data pages, and no more.
      expect(result.memoryServer.clients).toBe(1);
      expect(result.memoryServer.pagesServed).toBeGreaterThan(1000);
      expect(result.memoryServer.pagesServed).toBeLessThan((128 << 20) / 4096);
      await waitFor(`${SPAN}.2 ticking with id 2`, () => /tick \d+ id 2/.test(consoleText(`${SPAN}.2`)), BOOT_MS, [`${SPAN}.2`]);
      // The clone on the other host: its agent lists it, running (or idle between ticks), for as long as we look.
      const target = { host: other.name, address: other.address, port: other.agentPort };
      for (let look = 0; look < 3; look++) {
        const hello = (await agentRequest(target, inventory.secret, "hello")) as AgentHello;
        expect(hello.clones.map((c) => [c.name, c.parentHost, ["running", "blocked", "idle"].includes(c.state ?? "")])).toEqual([
          [`${SPAN}.1`, here.name, true],
        ]);
        await Bun.sleep(5000);
      }
      // Each clone took its own MAC and an address after its ID, and reaches this dom0 over the segment: the one on the other host too.
      await waitFor(
        "reports from clones 1 and 2 over the segment",
        () => (reported.get("1") ?? 0) >= 2 && (reported.get("2") ?? 0) >= 2,
        BOOT_MS,
      );
      console.log(
        `fork --cluster: ${result.totalMs.toFixed(0)} ms to all running, parent paused ${result.pausedMs.toFixed(0)} ms, ` +
          `${result.memoryServer.pagesServed} pages (${result.memoryServer.bytesSent} bytes) sent to ${other.name}; ` +
          `reports by clone ID: ${JSON.stringify(Object.fromEntries(reported))}`,
      );
    },
    2 * BOOT_MS + FORK_MS,
  );
});
