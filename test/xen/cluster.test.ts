/**
 * Xen hosts in a cluster (`bun run test:xen:stock` and `test:xen:paging-cluster` each boot two: run.sh
 * with SNOWFLOCK_XEN_HOSTS=2; the paging hosts run only the test of clones with memory on demand).
 * This dom0 is host h1 of the inventory at $SNOWFLOCK_XEN_CLUSTER; h2 is a second nested Xen host
 * whose dom0 runs `snowflock agent --backend xen --host h2` (test/xen/member-host.sh); the two
 * share one private L2 segment (a bridge in a network namespace of the run), which each dom0's
 * bridge sfbr0 joins. Checked here: every host's agent answers a signed hello across the segment
 * (`cluster status` of real hosts), a request signed with another secret is refused, `fork
 * --cluster` starts a clone on the other host from a signed order (eager memory by mcdist over raw
 * frames, then over TCP from the fork's memory server) whose family reaches it by address and by
 * the family API, a domU's own `sf clone 4`
 * spreads a dataset job over both hosts, and faults on the link and of an agent. On the paging
 * hosts: a domU's `sf clone` puts a clone with memory on demand on the other host, whose pager
 * pages in the parent's memory from this host's memory server while the clone runs.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { existsSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { agentRequest } from "../../src/cluster/agent-client.ts";
import { readInventory } from "../../src/cluster/inventory.ts";
import type { AgentHello } from "../../src/cluster/agent.ts";
import { sha256Hex } from "../../src/guest/dataset.ts";
import { expectForkResult } from "../support/fork-result-shape.ts";
import { writeTestDomU } from "./support/domu.ts";
import { BINARY, bootDomU, consoleHasLine, consoleText, describeXen, diagnosis, ROOT, run, waitFor } from "./support/xen-test.ts";

const INVENTORY = process.env.SNOWFLOCK_XEN_CLUSTER;
const THIS_HOST = process.env.SNOWFLOCK_XEN_HOST;
/** The paging hosts run only the test of clones with memory on demand; the stock hosts the others. */
const PAGING_HOST = process.env.SNOWFLOCK_REQUIRE_PAGING === "1";
const WORK = "/tmp/snowflock-xen-cluster-test";
const AGENTS_MS = 300_000;
const FORK_MS = 600_000;
const SF = join(ROOT, "guest/build/sf-linux");
const BOOT_MS = 300_000;

/** The start of every test domU's /init. */
const DOMU_START = `#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
`;
/** The start of a test domU's /init with its network frontend. */
const NETWORKED_DOMU = `${DOMU_START}insmod /lib/modules/xen-netfront.ko
`;
/** A dataset job's start: its data in RAM, then it waits for dom0's `start` before it forks. */
const datasetDomU = (seed: number, bytes: number) => `${DOMU_START}dataset ${seed} ${bytes} > /data
echo "snowflock-domu: dataset ready"
until [ -n "$(sf read snowflock/start 2>/dev/null)" ]; do sleep 1; done
`;

/** The spread fork's domU: it prints its clone ID every second and reports it to this dom0 over the segment. */
const SPAN = "sfspan";
const REPORT_PORT = 7171;
const SPAN_INIT = `${NETWORKED_DOMU}report_to=$(sed -n 's/.*sfreport=\\([0-9.]*\\).*/\\1/p' /proc/cmdline)
echo "snowflock-domu: up"
# The parent prints the family messages it gets (a clone's copy of this loop waits on its own inbox).
(while :; do m=$(sf recv) && echo "snowflock-domu: got $m"; done) &
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
    if [ "$id" != 0 ]; then
      # A clone reaches its parent and its sibling by their addresses, wherever they run, and says hello to the parent.
      for peer in 0 1 2; do
        [ "$peer" = "$id" ] && continue
        r=lost
        for try in 1 2 3 4 5 6 7 8 9 10; do
          if busybox ping -c 1 -W 3 10.77.0.$((60 + peer)) >/dev/null 2>&1; then r=ok; break; fi
        done
        echo "snowflock-domu: ping $peer $r"
        echo "id $id ping $peer $r" | busybox nc -w 1 "$report_to" ${REPORT_PORT} >/dev/null 2>&1
      done
      sf send 0 "hello-from-$id" && echo "snowflock-domu: sent hello to 0"
    fi
  fi
  echo "snowflock-domu: tick $i id $id"
  echo "id $id tick $i" | busybox nc -w 1 "$report_to" ${REPORT_PORT} >/dev/null 2>&1
  sleep 1
done
`;

/** The dataset job over both hosts: 32 MiB of seeded data in a 256 MiB domU, a quarter hashed by each of 4 clones. */
const JOB = "sfspread";
const JOB_SEED = 42;
const JOB_BYTES = 32 << 20;
const DATASET = join(ROOT, "guest/build/dataset-linux");
/**
 * The parent runs sf clone 4; each clone hashes its quarter and tells the parent it is ready (sf send), then waits
 * for the parent's "go" (sf recv) and exits with its digest; the parent, once all four are ready and dom0 says go,
 * sends each clone "go" and joins them. Then one more round of a single clone: the bytes on the hosts' link for the
 * four clones over two hosts are weighed against that one clone's.
 */
const JOB_INIT = `${datasetDomU(JOB_SEED, JOB_BYTES)}id=$(sf clone 4)
echo "snowflock-domu: sf clone gave $id"
if [ "$id" = 0 ]; then
  n=0
  while [ $n -lt 4 ]; do m=$(sf recv) && echo "snowflock-domu: got $m"; n=$((n + 1)); done
  echo "snowflock-domu: all ready"
  until [ -n "$(sf read snowflock/go 2>/dev/null)" ]; do sleep 1; done
  for c in 1 2 3 4; do sf send $c go; done
  echo "snowflock-domu: join $(sf join)"
  # A second round of one clone (on the other host), to weigh the first against.
  until [ -n "$(sf read snowflock/again 2>/dev/null)" ]; do sleep 1; done
  id=$(sf clone 1)
  [ "$id" != 0 ] && sf exit 0 one
  echo "snowflock-domu: join2 $(sf join)"
else
  quarter=$((${JOB_BYTES} / 4 / 1048576))
  digest=$(dd if=/data bs=1048576 skip=$(((id - 1) * quarter)) count=$quarter 2>/dev/null | sha256sum)
  digest=\${digest%% *}
  sf send 0 "ready-$id"
  m=$(sf recv)
  [ "$m" = "0 go" ] && sf exit 0 "$digest"
  sf exit 1
fi
while :; do sleep 60; done
`;

/** The fault domU: two rounds of sf clone 2 (clone 1 on the other host, clone 2 here). */
const FAULTY = "sffault";
const FAULT_SEED = 7;
const FAULT_BYTES = 4 << 20;
/**
 * Round 1 (the link drops and duplicates frames): each clone hashes the same 4 MiB, sends the digest to the parent
 * and exits with it. Round 2: clone 2 exits at once, clone 1 (on the other host) runs on until its host's agent is killed.
 */
const FAULT_INIT = `${datasetDomU(FAULT_SEED, FAULT_BYTES)}id=$(sf clone 2)
if [ "$id" = 0 ]; then
  for n in 1 2; do m=$(sf recv) && echo "snowflock-domu: got $m"; done
  echo "snowflock-domu: join $(sf join)"
  until [ -n "$(sf read snowflock/again 2>/dev/null)" ]; do sleep 1; done
  id=$(sf clone 2)
  if [ "$id" = 0 ]; then
    echo "snowflock-domu: second round"
    echo "snowflock-domu: join2 $(sf join)"
  elif [ "$id" = 2 ]; then
    sf exit 0 two
  fi
else
  digest=$(sha256sum /data)
  digest=\${digest%% *}
  sf send 0 "d$id-$digest"
  sf exit 0 "$digest"
fi
while :; do sleep 60; done
`;

/** A clone with memory on demand on the other host: 4 MiB of data in a 128 MiB domU (memory = maxmem, for paging). */
const REMOTE = "sfremote";
const REMOTE_SEED = 11;
const REMOTE_BYTES = 4 << 20;
/**
 * Two rounds of sf clone 1 (the clone lands on the other host), each started by dom0 (snowflock/startR): the clone
 * hashes the data (every page of it faulted in over the link), tells the parent, and exits with the digest once dom0
 * says go (snowflock/goR).
 */
const REMOTE_INIT = `${DOMU_START}dataset ${REMOTE_SEED} ${REMOTE_BYTES} > /data
echo "snowflock-domu: dataset ready"
for round in 1 2; do
  until [ -n "$(sf read snowflock/start$round 2>/dev/null)" ]; do sleep 1; done
  id=$(sf clone 1)
  if [ "$id" = 0 ]; then
    m=$(sf recv) && echo "snowflock-domu: round $round got $m"
    until [ -n "$(sf read snowflock/go$round 2>/dev/null)" ]; do sleep 1; done
    sf send \${m%% *} go
    echo "snowflock-domu: round $round join $(sf join)"
  else
    digest=$(sha256sum /data)
    digest=\${digest%% *}
    sf send 0 "hashed-$digest"
    m=$(sf recv)
    [ "$m" = "0 go" ] && sf exit 0 "$digest"
    sf exit 1
  fi
done
while :; do sleep 60; done
`;

/** Asks run.sh for a fault on the hosts (see its header) and waits for its result. */
async function askFault(line: string): Promise<string> {
  const control = process.env.SNOWFLOCK_XEN_CONTROL;
  if (!control) throw new Error("SNOWFLOCK_XEN_CONTROL is not set: run.sh with SNOWFLOCK_XEN_HOSTS=2 carries out the faults");
  rmSync(join(control, "fault.done"), { force: true });
  writeFileSync(join(control, "fault"), `${line}\n`);
  for (let waited = 0; waited < 30_000; waited += 250) {
    if (existsSync(join(control, "fault.done"))) {
      const result = readFileSync(join(control, "fault.done"), "utf8").trim();
      rmSync(join(control, "fault.done"), { force: true });
      if (!result.startsWith("ok")) throw new Error(`fault '${line}': ${result}`);
      return result;
    }
    await Bun.sleep(250);
  }
  throw new Error(`fault '${line}': run.sh did not answer in 30 s`);
}

/** Bytes this dom0 sent on its link to the hosts' segment (the port of sfbr0 that is not a domU's vif), from the NIC's counters. */
function linkBytesSent(): number {
  const uplink = readdirSync("/sys/class/net/sfbr0/brif").find((port) => !port.startsWith("vif"));
  if (!uplink) throw new Error("sfbr0 has no port to the hosts' segment");
  return Number(readFileSync(`/sys/class/net/${uplink}/statistics/tx_bytes`, "utf8"));
}

const clusterSkip = (): string | undefined => {
  if (INVENTORY === undefined) {
    // In CI both runs have their second host: then a missing inventory is a failure.
    if (process.env.SNOWFLOCK_REQUIRE_XEN === "1") throw new Error("SNOWFLOCK_XEN_CLUSTER is not set: run with SNOWFLOCK_XEN_HOSTS=2");
    return "a single Xen host (run.sh with SNOWFLOCK_XEN_HOSTS=2 makes a cluster)";
  }
  return undefined;
};

describeXen("Xen hosts in a cluster: agents across the hosts' private segment, domUs on it", () => {
  let agent: ReturnType<typeof Bun.spawn> | undefined;
  /** Why the cluster's tests skip (no second host); the stock hosts' tests and the paging hosts' one add their own. */
  let clusterSkipped: string | undefined;
  let skip: string | undefined;
  let pagingSkip: string | undefined;

  beforeAll(async () => {
    clusterSkipped = clusterSkip();
    skip = clusterSkipped ?? (PAGING_HOST ? "paging hosts: the cluster's eager clones are tested on the stock hosts" : undefined);
    pagingSkip =
      clusterSkipped ?? (PAGING_HOST ? undefined : "Debian's Xen does not page: clones with memory on demand run on the paging hosts");
    if (clusterSkipped) return;
    await run(["mkdir", "-p", WORK]);
    // This host's own agent: the guests' sf requests and the cluster's control plane (on the paging hosts, memory on demand).
    agent = startAgent(PAGING_HOST ? ["--memory", "ondemand"] : []);
  });

  const startAgent = (options: string[]) =>
    Bun.spawn([BINARY, "agent", "--backend", "xen", "--host", THIS_HOST ?? "h1", "--inventory", INVENTORY!, ...options], {
      cwd: ROOT,
      stdin: "ignore",
      stdout: openSync(join(WORK, "agent.log"), "a"),
      stderr: openSync(join(WORK, "agent.err"), "a"),
    });

  afterAll(async () => {
    agent?.kill();
    report?.stop(true);
    for (const d of [SPAN, `${SPAN}.1`, `${SPAN}.2`, JOB, `${JOB}.2`, `${JOB}.4`, FAULTY, `${FAULTY}.2`, REMOTE])
      await run(["xl", "destroy", d]);
    await askFault("link clear").catch(() => undefined);
  });

  /** Lines the domUs reported to this dom0 over the segment ("id I tick N"), by clone ID. */
  const reported = new Map<string, number>();
  /** What the clones' pings of their family members gave ("1 -> 0: ok"). */
  const pings: string[] = [];
  let report: { stop(closeActiveConnections?: boolean): void } | undefined;

  const agentOutput = () => ["agent.log", "agent.err"].map((f) => readFileSync(join(WORK, f), "utf8")).join("");

  test(
    "cluster status: every host's agent answers a signed hello over the segment, each a xen host",
    async () => {
      if (clusterSkipped) return console.log(clusterSkipped);
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

  test(
    "sf clone 1 in a domU on this host puts a clone with memory on demand on the other host: its pager pages in the " +
      "parent's memory from this host's server (tcp, then mcdist over raw frames) while the clone hashes 4 MiB of it; " +
      "the image is served until the clone has ended",
    async () => {
      if (pagingSkip) return console.log(pagingSkip);
      const inventory = readInventory(INVENTORY!);
      const other = inventory.hosts.find((h) => h.name !== THIS_HOST)!;
      const data = new Uint8Array(await new Response(Bun.spawn([DATASET, String(REMOTE_SEED), String(REMOTE_BYTES)]).stdout).arrayBuffer());
      const digest = sha256Hex(data);
      const remoteWork = join(WORK, "remote");
      await run(["mkdir", "-p", remoteWork]);
      const config = writeTestDomU(
        remoteWork,
        [
          { path: "init", data: REMOTE_INIT, mode: 0o755 },
          { path: "bin/sf", data: readFileSync(SF), mode: 0o755 },
          { path: "bin/dataset", data: readFileSync(DATASET), mode: 0o755 },
        ],
        ["memory=128", "maxmem=128"],
      );
      await bootDomU(REMOTE, [config, `extra="console=hvc0 quiet"`], () => consoleText(REMOTE).includes("dataset ready"), BOOT_MS);
      const domid = (await run(["xl", "domid", REMOTE])).stdout.trim();
      const target = { host: other.name, address: other.address, port: other.agentPort };
      for (const [round, transport] of [
        [1, "tcp"],
        [2, "packet"],
      ] as const) {
        if (transport !== "tcp") {
          // This host's agent serves the next round's image over mcdist's raw frames.
          agent?.kill();
          await agent?.exited;
          agent = startAgent(["--memory", "ondemand", "--transport", transport]);
          await waitFor("this host's agent to listen again", () => /memory by packet/.test(agentOutput()), AGENTS_MS);
        }
        const served = () => agentOutput().split("its image is no longer served").length - 1;
        const servedBefore = served();
        expect((await run(["xenstore-write", `/local/domain/${domid}/snowflock/start${round}`, "1"])).status).toBe(0);
        const hashed = new RegExp(`round ${round} got (\\d+) hashed-(\\w+)`);
        await waitFor(`${REMOTE}: round ${round}'s digest`, () => hashed.test(consoleText(REMOTE)), FORK_MS, [REMOTE]).catch(async (e) => {
          throw new Error(`${(e as Error).message}\nagent: ${agentOutput()}\n${await diagnosis([REMOTE])}`);
        });
        const [, cloneId, cloneDigest] = hashed.exec(consoleText(REMOTE))!;
        expect(cloneDigest).toBe(digest);
        expect(agentOutput()).toContain(`clone ${cloneId} on ${other.name}`);
        expect(agentOutput()).toMatch(
          new RegExp(`${REMOTE}\\.${cloneId} \\(domain \\d+ on ${other.name}\\) running; [^\\n]*memory ondemand`),
        );
        expect(agentOutput()).toContain(`its image stays served to clone(s) ${cloneId} on other hosts`);
        // The other host's agent keeps the clone's pager: the data came in by its faults.
        const hello = (await agentRequest(target, inventory.secret, "hello")) as AgentHello;
        const clone = hello.clones.find((c) => c.name === `${REMOTE}.${cloneId}`);
        console.log(`round ${round} (${transport}): ${REMOTE}.${cloneId} on ${other.name}: ${JSON.stringify(clone)}`);
        expect(clone?.faults).toBeGreaterThan(0);
        expect(clone?.pagesFetched).toBeGreaterThanOrEqual(REMOTE_BYTES / 4096);
        expect((await run(["xenstore-write", `/local/domain/${domid}/snowflock/go${round}`, "1"])).status).toBe(0);
        await waitFor(`${REMOTE}: round ${round}'s join`, () => consoleHasLine(REMOTE, `round ${round} join `), FORK_MS, [REMOTE]).catch(
          async (e) => {
            // Where the join stopped: the request and reply nodes the guest tool and the agent share, and the agent's side.
            const nodes = await run(["xenstore-ls", "-f", `/local/domain/${domid}/snowflock`]);
            throw new Error(`${(e as Error).message}\n${nodes.stdout}\nagent: ${agentOutput()}\n${await diagnosis([REMOTE])}`);
          },
        );
        expect(consoleText(REMOTE)).toContain(`snowflock-domu: round ${round} join 1 ${cloneId}=0:${digest}`);
        await waitFor("the parent's image to be closed", () => served() > servedBefore, 60_000);
      }
      await run(["xl", "destroy", REMOTE]);
    },
    BOOT_MS + 3 * FORK_MS,
  );

  test("a clone order signed with another secret is refused by the other host's agent, which counts it", async () => {
    if (skip) return console.log(skip);
    const inventory = readInventory(INVENTORY!);
    const other = inventory.hosts.find((h) => h.name !== THIS_HOST)!;
    const target = { host: other.name, address: other.address, port: other.agentPort };
    const refused = async () => ((await agentRequest(target, inventory.secret, "hello")) as AgentHello).refused;
    const before = await refused();
    const order = { parent: SPAN, parentHost: THIS_HOST, descriptor: "", cloneIds: [9], memory: "tcp:10.77.0.1:1", parentDomain: 1 };
    await expect(agentRequest(target, "0".repeat(64), "clone", order)).rejects.toThrow(/refused|did not answer/);
    expect(await refused()).toBe(before + 1);
  });

  test(
    "fork sfspan --clones 2 --cluster --transport packet: clone 1 starts on the other host from a signed order with its memory by mcdist, clone 2 here; both run their own IDs and reach this dom0 with their own MAC and address",
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
            for (const m of data.toString().matchAll(/id (\d+) ping (\d+) (ok|lost)/g)) pings.push(`${m[1]} -> ${m[2]}: ${m[3]}`);
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
      // The other host gets the memory by mcdist over raw frames (slow under emulation, hence the longer waits).
      // The frames must not flood into the domUs on the bridges: the parent's vif counts what dom0 sends it.
      const parentVif = `/sys/class/net/vif${(await run(["xl", "domid", SPAN])).stdout.trim()}.0/statistics/tx_packets`;
      const parentVifBefore = Number(readFileSync(parentVif, "utf8"));
      const r = await run(
        [
          BINARY,
          "fork",
          SPAN,
          "--clones",
          "2",
          "--cluster",
          "--transport",
          "packet",
          "--inventory",
          INVENTORY!,
          "--backend",
          "xen",
          "--json",
        ],
        3 * FORK_MS,
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
      // The other host fetched the parent's memory once: its data pages, and no more; pages asked for one
      // after another went two to a frame on the segment's jumbo frames (run.sh: MTU 9000).
      expect(result.transport).toBe("packet");
      expect(result.memoryServer.clients).toBe(1);
      expect(result.memoryServer.pagesServed).toBeGreaterThan(1000);
      expect(result.memoryServer.pagesServed).toBeLessThan((128 << 20) / 4096);
      expect(result.memoryServer.framesSent).toBeLessThan(0.75 * result.memoryServer.pagesServed);
      // Only the segment's own traffic reached the parent (ARP, pings, reports), none of mcdist's frames; the
      // bridge's entries for the family's group went with the fork.
      const parentVifFrames = Number(readFileSync(parentVif, "utf8")) - parentVifBefore;
      expect(parentVifFrames).toBeLessThan(result.memoryServer.framesSent / 10);
      expect((await run(["bridge", "mdb", "show", "dev", "sfbr0"])).stdout).not.toContain("03:73:");
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
      // On the family's segment the clone on the other host reaches its parent and its sibling here.
      await waitFor("clone 1's pings of 0 and 2", () => pings.filter((p) => p.startsWith("1 -> ")).length === 2, BOOT_MS);
      expect(pings.filter((p) => p.startsWith("1 -> ")).sort()).toEqual(["1 -> 0: ok", "1 -> 2: ok"]);
      // sf send from each clone (one on each host) reaches the parent's sf recv through the agents.
      await waitFor("the parent's family messages", () => consoleText(SPAN).includes("got 1 hello-from-1"), BOOT_MS, [SPAN]);
      await waitFor("clone 2's message", () => consoleText(SPAN).includes("got 2 hello-from-2"), BOOT_MS, [SPAN]);
      console.log(
        `fork --cluster --transport packet: ${result.totalMs.toFixed(0)} ms to all running, parent paused ${result.pausedMs.toFixed(0)} ms, ` +
          `${result.memoryServer.pagesServed} pages in ${result.memoryServer.framesSent} frames (${result.memoryServer.bytesSent} bytes, ` +
          `${result.memoryServer.pagesResent} pages resent) sent to ${other.name}, ${parentVifFrames} frames to the parent's vif; ` +
          `reports by clone ID: ${JSON.stringify(Object.fromEntries(reported))}`,
      );
      // A second fork: its clone takes the next ID of the whole family, not of this host's clones alone.
      const again = await run(
        [BINARY, "fork", SPAN, "--clones", "1", "--cluster", "--inventory", INVENTORY!, "--backend", "xen", "--json"],
        FORK_MS,
      );
      if (again.status !== 0)
        throw new Error(`the second fork --cluster failed (${again.status}): ${again.stderr}\nagent: ${agentOutput()}`);
      const second = JSON.parse(again.stdout);
      expect(second.clones.map((c: { name: string; host: string }) => `${c.name}@${c.host}`)).toEqual([`${SPAN}.3@${other.name}`]);
      expect(second.failed).toEqual([]);
      expect(second.transport).toBe("tcp");
      await waitFor("clone 3's message over the family API", () => consoleText(SPAN).includes("got 3 hello-from-3"), BOOT_MS, [SPAN]);
      // kill --cluster ends the family on every host: the clones on the other host through its agent.
      const killed = await run([BINARY, "kill", SPAN, "--cluster", "--inventory", INVENTORY!, "--backend", "xen", "--json"]);
      expect(killed.status).toBe(0);
      expect(
        (JSON.parse(killed.stdout) as Array<{ name: string; host?: string }>).map((d) => `${d.name}@${d.host ?? THIS_HOST}`).sort(),
      ).toEqual([`${SPAN}@${THIS_HOST}`, `${SPAN}.1@${other.name}`, `${SPAN}.2@${THIS_HOST}`, `${SPAN}.3@${other.name}`].sort());
      const left = (await agentRequest(target, inventory.secret, "hello")) as AgentHello;
      expect(left.clones.filter((c) => c.name.startsWith(`${SPAN}.`))).toEqual([]);
    },
    2 * BOOT_MS + 4 * FORK_MS,
  );

  test(
    "sf clone 4 in a domU on this host: clones on both hosts each hash a quarter of a 32 MiB dataset in their memory; " +
      "the family's messages cross the hosts; the parent's sf join prints the four digests, equal to the host's",
    async () => {
      if (skip) return console.log(skip);
      const inventory = readInventory(INVENTORY!);
      const other = inventory.hosts.find((h) => h.name !== THIS_HOST)!;
      const data = new Uint8Array(await new Response(Bun.spawn([DATASET, String(JOB_SEED), String(JOB_BYTES)]).stdout).arrayBuffer());
      const quarter = JOB_BYTES / 4;
      const expected = [0, 1, 2, 3].map((i) => sha256Hex(data.subarray(i * quarter, (i + 1) * quarter)));
      const jobWork = join(WORK, "job");
      await run(["mkdir", "-p", jobWork]);
      const config = writeTestDomU(
        jobWork,
        [
          { path: "init", data: JOB_INIT, mode: 0o755 },
          { path: "bin/sf", data: readFileSync(SF), mode: 0o755 },
          { path: "bin/dataset", data: readFileSync(DATASET), mode: 0o755 },
        ],
        ["memory=256", "maxmem=256"],
      );
      await bootDomU(JOB, [config, `extra="console=hvc0 quiet"`], () => consoleText(JOB).includes("dataset ready"), BOOT_MS);
      const domid = (await run(["xl", "domid", JOB])).stdout.trim();
      const sentBefore = linkBytesSent();
      expect((await run(["xenstore-write", `/local/domain/${domid}/snowflock/start`, "1"])).status).toBe(0);
      await waitFor(`${JOB}: all four clones ready`, () => consoleText(JOB).includes("all ready"), FORK_MS, [JOB]).catch(async (e) => {
        throw new Error(`${(e as Error).message}\nagent: ${agentOutput()}\n${await diagnosis([JOB])}`);
      });
      const sentForFour = linkBytesSent() - sentBefore;
      expect(consoleText(JOB)).toContain("sf clone gave 0");
      for (const c of [1, 2, 3, 4]) expect(consoleText(JOB)).toContain(`got ${c} ready-${c}`);
      // Placement deals the other host first: clones 1 and 3 there, 2 and 4 here. Each host's agent names its clones (--json).
      expect(agentOutput()).toMatch(
        new RegExp(`clone 1 on ${other.name}, clone 2 on ${THIS_HOST}, clone 3 on ${other.name}, clone 4 on ${THIS_HOST}`),
      );
      const status = JSON.parse((await run([BINARY, "cluster", "status", "--json", "--inventory", INVENTORY!])).stdout) as {
        hosts: Array<{ name: string; hello?: AgentHello }>;
      };
      const clonesOn = (host: string) =>
        (status.hosts.find((h) => h.name === host)?.hello?.clones ?? [])
          .filter((c) => c.name.startsWith(`${JOB}.`))
          .map((c) => `${c.name}@${c.parentHost}`)
          .sort();
      expect(clonesOn(other.name)).toEqual([`${JOB}.1@${THIS_HOST}`, `${JOB}.3@${THIS_HOST}`]);
      const here = JSON.parse((await run([BINARY, "ls", "--backend", "xen", "--json"])).stdout) as Array<{ name: string }>;
      expect(
        here
          .map((d) => d.name)
          .filter((n) => n.startsWith(`${JOB}.`))
          .sort(),
      ).toEqual([`${JOB}.2`, `${JOB}.4`]);
      expect((await run(["xenstore-write", `/local/domain/${domid}/snowflock/go`, "1"])).status).toBe(0);
      await waitFor(`${JOB}: join`, () => consoleHasLine(JOB, "join "), FORK_MS, [JOB]);
      expect(consoleText(JOB)).toContain(`snowflock-domu: join 4 ${expected.map((d, i) => `${i + 1}=0:${d}`).join(" ")}`);
      // One clone of the same parent on the other host: the four clones over two hosts cost the link no more than 1.2x its bytes.
      const sentBeforeOne = linkBytesSent();
      expect((await run(["xenstore-write", `/local/domain/${domid}/snowflock/again`, "1"])).status).toBe(0);
      await waitFor(`${JOB}: the second join`, () => consoleText(JOB).includes("join2 "), FORK_MS, [JOB]);
      expect(consoleText(JOB)).toContain("snowflock-domu: join2 1 1=0:one");
      const sentForOne = linkBytesSent() - sentBeforeOne;
      const served = [...agentOutput().matchAll(/(\d+) pages \((\d+) bytes\) served to (\d+) other host/g)].slice(-2);
      console.log(
        `bytes sent on ${THIS_HOST}'s link: 4 clones over 2 hosts ${sentForFour}, 1 clone on ${other.name} ${sentForOne} ` +
          `(ratio ${(sentForFour / sentForOne).toFixed(3)}); memory server: ${served.map((m) => `${m[2]} bytes to ${m[3]} host(s)`).join(", then ")}`,
      );
      expect(sentForOne).toBeGreaterThan(JOB_BYTES / 4);
      expect(sentForFour).toBeLessThanOrEqual(1.2 * sentForOne);
      // Every clone has gone, on both hosts.
      const cloneThere = async () =>
        (
          (await agentRequest({ host: other.name, address: other.address, port: other.agentPort }, inventory.secret, "hello")) as AgentHello
        ).clones.some((c) => c.name.startsWith(`${JOB}.`));
      for (let waited = 0; (await cloneThere()) && waited < 60_000; waited += 1000) await Bun.sleep(1000);
      expect(await cloneThere()).toBe(false);
      expect((await run(["xl", "list"])).stdout).not.toMatch(new RegExp(`^${JOB}\\.\\d `, "m"));
      console.log(`sf clone 4 over two hosts: ${agentOutput().match(new RegExp(`[^\\n]*${JOB}\\.1 [^\\n]*running[^\\n]*`))?.[0] ?? ""}`);
    },
    BOOT_MS + 2 * FORK_MS,
  );

  test(
    "faults: with frames dropped and duplicated on the hosts' link the family's results stay right; with the other " +
      "host's agent killed, the parent's sf join returns and reports that host's clone as crashed",
    async () => {
      if (skip) return console.log(skip);
      const inventory = readInventory(INVENTORY!);
      const other = inventory.hosts.find((h) => h.name !== THIS_HOST)!;
      const data = new Uint8Array(await new Response(Bun.spawn([DATASET, String(FAULT_SEED), String(FAULT_BYTES)]).stdout).arrayBuffer());
      const digest = sha256Hex(data);
      const faultWork = join(WORK, "fault");
      await run(["mkdir", "-p", faultWork]);
      const config = writeTestDomU(faultWork, [
        { path: "init", data: FAULT_INIT, mode: 0o755 },
        { path: "bin/sf", data: readFileSync(SF), mode: 0o755 },
        { path: "bin/dataset", data: readFileSync(DATASET), mode: 0o755 },
      ]);
      await bootDomU(FAULTY, [config, `extra="console=hvc0 quiet"`], () => consoleText(FAULTY).includes("dataset ready"), BOOT_MS);
      const domid = (await run(["xl", "domid", FAULTY])).stdout.trim();
      await askFault("link faulty");
      let dropped: string;
      try {
        expect((await run(["xenstore-write", `/local/domain/${domid}/snowflock/start`, "1"])).status).toBe(0);
        await waitFor(`${FAULTY}: join`, () => consoleHasLine(FAULTY, "join "), FORK_MS, [FAULTY]).catch(async (e) => {
          throw new Error(`${(e as Error).message}\nagent: ${agentOutput()}\n${await diagnosis([FAULTY])}`);
        });
      } finally {
        dropped = await askFault("link clear");
      }
      // The eager image crossed a link that lost frames: TCP sent them again, and every clone hashed the same bytes.
      expect(Number(/dropped (\d+)/.exec(dropped)?.[1])).toBeGreaterThan(0);
      expect(consoleText(FAULTY)).toContain(`got 1 d1-${digest}`);
      expect(consoleText(FAULTY)).toContain(`got 2 d2-${digest}`);
      expect(consoleText(FAULTY)).toContain(`snowflock-domu: join 2 1=0:${digest} 2=0:${digest}`);

      expect((await run(["xenstore-write", `/local/domain/${domid}/snowflock/again`, "1"])).status).toBe(0);
      await waitFor(`${FAULTY}: the second round`, () => consoleText(FAULTY).includes("second round"), FORK_MS, [FAULTY]);
      const target = { host: other.name, address: other.address, port: other.agentPort };
      const runsThere = async () =>
        ((await agentRequest(target, inventory.secret, "hello")) as AgentHello).clones.some((c) => c.name === `${FAULTY}.1`);
      for (let waited = 0; !(await runsThere()) && waited < 60_000; waited += 1000) await Bun.sleep(1000);
      expect(await runsThere()).toBe(true);
      await askFault(`stop-agent ${other.name}`);
      const killedAt = performance.now();
      await waitFor(`${FAULTY}: the second join`, () => consoleText(FAULTY).includes("join2 "), 120_000, [FAULTY]);
      console.log(
        `the parent's join returned ${((performance.now() - killedAt) / 1000).toFixed(1)} s after ${other.name}'s agent was killed`,
      );
      // Clone 1's host no longer answers: it counts as crashed (-11); clone 2 exited here.
      expect(consoleText(FAULTY)).toContain("snowflock-domu: join2 2 1=-11 2=0:two");
      expect(agentOutput()).toContain(`host ${other.name} does not answer`);
    },
    BOOT_MS + 2 * FORK_MS,
  );
});
