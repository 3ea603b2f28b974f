/**
 * Xen hosts in a cluster (`bun run test:xen:stock` boots two: run.sh with SNOWFLOCK_XEN_HOSTS=2).
 * This dom0 is host h1 of the inventory at $SNOWFLOCK_XEN_CLUSTER; h2 is a second nested Xen host
 * whose dom0 runs `snowflock agent --backend xen --host h2` (test/xen/member-host.sh); the two
 * share one private L2 segment (a bridge in a network namespace of the run), which each dom0's
 * bridge sfbr0 joins. Checked here: every host's agent answers a signed hello across the segment
 * (`cluster status` of real hosts), a request signed with another secret is refused, and a domU
 * whose vif is on sfbr0 reaches the other host over it.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { openSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { agentRequest } from "../../src/cluster/agent-client.ts";
import { readInventory } from "../../src/cluster/inventory.ts";
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
const BOOT_MS = 300_000;

const INIT = `#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
insmod /lib/modules/xen-netfront.ko
busybox ip link set eth0 up
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
    await run(["xl", "destroy", PINGER]);
  });

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
      const config = writeTestDomU(WORK, [{ path: "init", data: INIT, mode: 0o755 }], ["vif = ['bridge=sfbr0']"]);
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
});
