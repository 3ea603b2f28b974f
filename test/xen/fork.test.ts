/**
 * Fork on Xen, in dom0 of the nested Xen host (`bun run test:xen`): `snowflock fork` of a running
 * PVH domU into clones that keep running with their own clone IDs, `ls` and `kill` of the family,
 * and the Impromptu Cluster API from inside a domU (guest/linux/sf) served by
 * `snowflock agent --backend xen`.
 *
 * The domUs are build-host.sh's busybox guest with one more archive on top of its initramfs:
 * the sf tool and an /init that prints "snowflock-domu: tick N id I" every second (I from
 * `sf id`), and with `sfjob=1` on its command line first runs a dataset job through `sf clone 4`
 * and the rest of the API (see INIT below).
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { openSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { sha256Hex } from "../../src/guest/dataset.ts";
import type { XenState } from "../../src/backend/xen/persist.ts";
import { decodeDescriptor } from "../../src/descriptor/format.ts";
import { expectForkResult } from "../support/fork-result-shape.ts";
import { writeTestDomU } from "./support/domu.ts";
import {
  BINARY,
  bootDomU,
  consoleHasLine,
  consoleLogPath,
  consoleText,
  describeXen,
  diagnosis,
  ROOT,
  run,
  waitFor,
} from "./support/xen-test.ts";

/** The nested host booted Xen built with memory paging (SNOWFLOCK_XEN_HYPERVISOR=paging). */
const PAGING_HOST = process.env.SNOWFLOCK_REQUIRE_PAGING === "1";
/** On the paging host (slow under emulation) only what pages runs: the stock host's run covers the rest. */
const STOCK_ONLY = "paging host: the eager path runs on the stock host";

const WORK = "/tmp/snowflock-xen-fork-test";
const SF = join(ROOT, "guest/build/sf-linux");
const DATASET = join(ROOT, "guest/build/dataset-linux");
const PARENT = "sfdom";
/** Forked from shells kept ready (snowflock pool). */
const POOLED = "sfpool";
/** The dataset job's domU (256 MiB): 32 MiB of seeded data in RAM, a quarter hashed by each of 4 clones. */
const JOB = "sfjob";
const JOB_SEED = 42;
const JOB_BYTES = 32 << 20;
/** The free-pages job's domUs (256 MiB, paging host): 128 MiB written and freed, then 128 MiB filled by the clone. */
const FREE_ON = "sffree";
const FREE_OFF = "sfnofree";
const FREED_BYTES = 128 << 20;
const FILL_SEED = 9;
const FILL_BYTES = 128 << 20;
const BOOT_MS = 300_000;
const FORK_MS = 600_000;

const INIT = `#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "snowflock-domu: up"
case "$(cat /proc/cmdline)" in
*sfjob=1*)
  dataset ${JOB_SEED} ${JOB_BYTES} > /data
  echo "snowflock-domu: dataset ready"
  id=$(sf clone 4)
  echo "snowflock-domu: sf clone gave $id"
  if [ "$id" != 0 ]; then
    family=$(sf read snowflock/family)
    if sf write /local/domain/$family/snowflock/request "kill 7" 2>/dev/null; then
      echo "snowflock-domu: forged request accepted"
    else
      echo "snowflock-domu: forged request refused"
    fi
    quarter=$((${JOB_BYTES} / 4 / 1048576))
    digest=$(dd if=/data bs=1048576 skip=$(((id - 1) * quarter)) count=$quarter 2>/dev/null | sha256sum)
    digest=\${digest%% *}
    echo "snowflock-domu: slice $id $digest"
    # The test reads this clone's counters while it lives, then says go.
    until [ -n "$(sf read snowflock/go 2>/dev/null)" ]; do sleep 1; done
    sf exit $((40 + id)) "$digest"
  else
    sf exit 1 || echo "snowflock-domu: parent exit refused"
    echo "snowflock-domu: join $(sf join)"
  fi
  ;;
*sffree=*)
  # Room for 128 MiB beside the initramfs (a tmpfs root would stop at half the RAM).
  mkdir -p /scratch && mount -t tmpfs -o size=200m tmpfs /scratch
  dataset 5 ${FREED_BYTES} > /scratch/freed
  rm /scratch/freed
  echo "snowflock-domu: freed"
  case "$(cat /proc/cmdline)" in
  *sffree=off*) id=$(sf clone --no-heuristic free-pages 1) ;;
  *) id=$(sf clone 1) ;;
  esac
  echo "snowflock-domu: sf clone gave $id"
  if [ "$id" != 0 ]; then
    dataset ${FILL_SEED} ${FILL_BYTES} > /scratch/filled
    digest=$(sha256sum /scratch/filled)
    digest=\${digest%% *}
    echo "snowflock-domu: filled $digest"
    until [ -n "$(sf read snowflock/go 2>/dev/null)" ]; do sleep 1; done
    sf exit 0 "$digest"
  else
    echo "snowflock-domu: join $(sf join)"
  fi
  ;;
esac
i=0
while :; do
  i=$((i + 1))
  echo "snowflock-domu: tick $i id $(sf id)"
  sleep 1
done
`;

/** The clone IDs a domU has printed with its ticks, from the console log. */
function idsSeen(domain: string, { skipFirst = false } = {}): Set<string> {
  const ids = [...consoleText(domain).matchAll(/snowflock-domu: tick \d+ id (\S+)/g)].map((m) => m[1]!);
  return new Set(skipFirst ? ids.slice(1) : ids);
}

/** What the agent has printed so far. */
const agentOutput = () =>
  ["agent.log", "agent.err"]
    .map((f) => {
      try {
        return readFileSync(join(WORK, f), "utf8");
      } catch {
        return "";
      }
    })
    .join("");

const firstLine = (e: unknown) => (e instanceof Error ? e.message : String(e)).split("\n")[0];

function lastTick(domain: string): number {
  const all = [...consoleText(domain).matchAll(/snowflock-domu: tick (\d+)/g)];
  return all.length === 0 ? 0 : Number(all.at(-1)![1]);
}

/** The domains are gone within a minute, and no dying one ("(null)" in xl list) is left either. */
async function expectGone(names: string[]): Promise<void> {
  const left = (list: string) => list.split("\n").filter((l) => names.some((n) => l.startsWith(`${n} `)) || l.startsWith("(null) "));
  let list = "";
  for (let waited = 0; waited < 60_000 && ((list = (await run(["xl", "list"])).stdout), left(list).length > 0); waited += 1000)
    await Bun.sleep(1000);
  expect(left(list)).toEqual([]);
}

/** Starts a test domU and waits until its console shows it running. */
async function createDomU(name: string, extra = "", config: string[] = []): Promise<void> {
  await bootDomU(
    name,
    [join(WORK, "domu.cfg"), `extra="console=hvc0 quiet ${extra}"`, ...config],
    () => consoleText(name).includes("snowflock-domu: up"),
    BOOT_MS,
  );
}

describeXen("snowflock fork on Xen: a PVH domU into running clones, and sf from inside", () => {
  let agent: ReturnType<typeof Bun.spawn> | undefined;
  const domains = () => [
    PARENT,
    `${PARENT}.1`,
    `${PARENT}.2`,
    `${PARENT}.3`,
    JOB,
    ...[1, 2, 3, 4].map((c) => `${JOB}.${c}`),
    ...[FREE_ON, FREE_OFF].flatMap((d) => [d, `${d}.1`]),
    POOLED,
    ...[1, 2, 3].map((c) => `${POOLED}.${c}`),
  ];

  beforeAll(async () => {
    await run(["mkdir", "-p", WORK]);
    writeTestDomU(WORK, [
      { path: "init", data: INIT, mode: 0o755 },
      { path: "bin/sf", data: readFileSync(SF), mode: 0o755 },
      { path: "bin/dataset", data: readFileSync(DATASET), mode: 0o755 },
    ]);
    for (const d of domains()) await run(["xl", "destroy", d]);
    agent = startAgent();
  });

  afterAll(async () => {
    agent?.kill();
    for (const d of domains()) await run(["xl", "destroy", d]);
  });

  /** `snowflock agent --backend xen`, its output appended to agent.log and agent.err (a restarted one adds to them). */
  const startAgent = () =>
    Bun.spawn([BINARY, "agent", "--backend", "xen"], {
      cwd: ROOT,
      stdin: "ignore",
      stdout: openSync(join(WORK, "agent.log"), "a"),
      stderr: openSync(join(WORK, "agent.err"), "a"),
    });

  const fail = async (what: string) => new Error(`${what}\nagent: ${agentOutput()}\n${await diagnosis(domains())}`);

  test(
    "stock host: snowflock fork sfdom --clones 3: three running clones whose consoles show IDs 1, 2, 3 from sf id; the parent goes on with 0",
    async () => {
      if (PAGING_HOST) return console.log(STOCK_ONLY);
      await createDomU(PARENT);
      await waitFor(`${PARENT} ticking`, () => lastTick(PARENT) >= 2, BOOT_MS, [PARENT]);
      const r = await run([BINARY, "fork", PARENT, "--clones", "3", "--backend", "xen", "--json"], FORK_MS);
      if (r.status !== 0) throw await fail(`fork failed (${r.status}): ${r.stderr}`);
      const result = JSON.parse(r.stdout);
      expectForkResult(result, "xen");
      expect(result.memory).toBe("eager");
      expect(result.clones.map((c: { name: string; cloneId: number }) => [c.name, c.cloneId])).toEqual([
        [`${PARENT}.1`, 1],
        [`${PARENT}.2`, 2],
        [`${PARENT}.3`, 3],
      ]);
      expect(result.eagerCopy.pagesCopied).toBeGreaterThan((128 << 20) / 4096 / 2);
      const parentTick = lastTick(PARENT);
      for (const c of [1, 2, 3]) {
        const name = `${PARENT}.${c}`;
        // A clone carries on from the parent's instant: its first line is a tick, no boot.
        await waitFor(`${name} printing id ${c}`, () => idsSeen(name, { skipFirst: true }).has(String(c)), BOOT_MS, [name]).catch(
          async (e) => {
            throw await fail(`${name} never printed its id: ${firstLine(e)}`);
          },
        );
        expect(consoleText(name)).not.toContain("snowflock-domu: up");
        // Its first line may be the one the parent was printing at the fork instant (its `sf id` had
        // already answered 0); every line after that is the clone's own.
        expect(idsSeen(name, { skipFirst: true })).toEqual(new Set([String(c)]));
      }
      await waitFor("the parent ticking on", () => lastTick(PARENT) > parentTick + 1, BOOT_MS, [PARENT]);
      expect([...idsSeen(PARENT)]).toEqual(["0"]);
    },
    FORK_MS * 2,
  );

  test("stock host: snowflock ls --backend xen shows the family, clones under their parent", async () => {
    if (PAGING_HOST) return console.log(STOCK_ONLY);
    const r = await run([BINARY, "ls", "--backend", "xen", "--json"]);
    expect(r.status).toBe(0);
    const rows = JSON.parse(r.stdout) as Array<{ name: string; cloneId: number; family: number; domid: number; mac?: string }>;
    const parent = rows.find((x) => x.name === PARENT)!;
    const family = rows.filter((x) => x.family === parent.domid);
    expect(family.map((x) => [x.name, x.cloneId])).toEqual([
      [PARENT, 0],
      [`${PARENT}.1`, 1],
      [`${PARENT}.2`, 2],
      [`${PARENT}.3`, 3],
    ]);
    // Each clone's own MAC address, published in XenStore.
    const macs = family.slice(1).map((x) => x.mac);
    for (const mac of macs) expect(mac).toMatch(/^00:16:3e:[0-9a-f]{2}:[0-9a-f]{2}:[0-9a-f]{2}$/);
    expect(new Set(macs).size).toBe(3);
    const text = await run([BINARY, "ls", "--backend", "xen"]);
    expect(text.stdout).toMatch(new RegExp(`^└─ ${PARENT.replace(".", "\\.")}\\.2 `, "m"));
  });

  test(
    "stock host: snowflock kill sfdom.2 ends that clone only; kill sfdom --clones ends the rest; the parent runs on",
    async () => {
      if (PAGING_HOST) return console.log(STOCK_ONLY);
      const one = await run([BINARY, "kill", `${PARENT}.2`, "--backend", "xen"]);
      expect(one.status).toBe(0);
      let names = (await run(["xl", "list"])).stdout;
      expect(names).not.toMatch(new RegExp(`^${PARENT}\\.2 `, "m"));
      expect(names).toMatch(new RegExp(`^${PARENT}\\.1 `, "m"));
      const rest = await run([BINARY, "kill", PARENT, "--clones", "--backend", "xen"]);
      expect(rest.status).toBe(0);
      names = (await run(["xl", "list"])).stdout;
      expect(names).not.toMatch(new RegExp(`^${PARENT}\\.\\d `, "m"));
      const before = lastTick(PARENT);
      await waitFor("the parent ticking after the kills", () => lastTick(PARENT) > before + 1, BOOT_MS, [PARENT]);
      const again = await run([BINARY, "kill", PARENT, "--clones", "--backend", "xen"]);
      expect(again.status).toBe(1);
      expect(again.stderr).toContain(`domain ${PARENT} has no running clones`);
    },
    BOOT_MS * 2,
  );

  test(
    "stock host: snowflock descriptor sfdom -o FILE: inspect reads a xen descriptor of its vCPU, memory and configuration; sfdom ticks on",
    async () => {
      if (PAGING_HOST) return console.log(STOCK_ONLY);
      const file = join(WORK, `${PARENT}.sfd`);
      const r = await run([BINARY, "descriptor", PARENT, "-o", file, "--backend", "xen", "--json"], FORK_MS);
      if (r.status !== 0) throw await fail(`descriptor failed (${r.status}): ${r.stderr}`);
      const tick = lastTick(PARENT);
      const inspected = await run([BINARY, "inspect", file, "--json"]);
      expect(inspected.status).toBe(0);
      const summary = JSON.parse(inspected.stdout);
      expect(summary).toMatchObject({ backend: "xen", name: PARENT, memoryBytes: 128 << 20, pages: (128 << 20) / 4096 });
      expect(summary.vcpus).toHaveLength(1);
      expect(summary.vcpus[0].rip).toMatch(/^0xffff/);
      // The kernel and its initramfs hold data; most of 128 MiB of a busybox guest does not.
      expect(summary.pagesNonZero).toBeGreaterThan(1000);
      expect(summary.pagesNonZero).toBeLessThan(summary.pages);
      expect(summary.pagesIncluded).toBeGreaterThan(4);
      expect(summary.fileBytes).toBeLessThan(summary.memoryBytes / 50);
      // What another host builds the clones' shells from travels inside it.
      const state = decodeDescriptor(new Uint8Array(readFileSync(file))).descriptor.state as XenState;
      expect(JSON.parse(state.config).c_info).toMatchObject({ type: "pvh", name: PARENT });
      await waitFor("the parent ticking on", () => lastTick(PARENT) > tick + 1, BOOT_MS, [PARENT]);
    },
    FORK_MS + BOOT_MS,
  );

  test(
    "paging host: the agent killed under an on-demand clone: ls --json says nothing serves its memory, and the next agent ends it; " +
      "no domain is left behind",
    async () => {
      if (!PAGING_HOST) return console.log("Debian's Xen does not page: no clone with memory on demand here");
      await createDomU(PARENT);
      await waitFor(`${PARENT} ticking`, () => lastTick(PARENT) >= 1, BOOT_MS, [PARENT]);
      rmSync(consoleLogPath(`${PARENT}.1`), { force: true });
      const r = await run([BINARY, "fork", PARENT, "--clones", "1", "--memory", "ondemand", "--backend", "xen", "--json"], FORK_MS);
      if (r.status !== 0) throw await fail(`fork --memory ondemand failed (${r.status}): ${r.stderr}`);
      const orphan = `${PARENT}.1`;
      await waitFor(`${orphan} printing id 1`, () => idsSeen(orphan, { skipFirst: true }).has("1"), FORK_MS, [orphan]);
      agent!.kill("SIGKILL");
      await agent!.exited;
      const listed = await run([BINARY, "ls", "--backend", "xen", "--json"]);
      expect(listed.status).toBe(0);
      const row = (JSON.parse(listed.stdout) as Array<{ name: string; pagerError?: string }>).find((x) => x.name === orphan);
      expect(row?.pagerError).toStartWith("nothing serves its memory: the agent did not answer");
      const text = await run([BINARY, "ls", "--backend", "xen"]);
      expect(text.stdout).toMatch(new RegExp(`${orphan.replace(".", "\\.")} .*\\(no pager\\)`));
      expect(text.stderr).toContain(`${orphan}: nothing serves its memory`);
      agent = startAgent();
      await waitFor(
        "the new agent ending the orphan",
        () => agentOutput().includes(`(${orphan}): its memory's pager ended with an earlier agent; ending it`),
        60_000,
      );
      await expectGone([orphan]);
      const before = lastTick(PARENT);
      await waitFor(`${PARENT} ticking on`, () => lastTick(PARENT) > before + 1, BOOT_MS, [PARENT]);
    },
    FORK_MS * 2,
  );

  test(
    "paging host: snowflock fork sfdom --clones 2 --memory ondemand --json, through the agent: paged-out shells, clones with their " +
      "own IDs; the parent may end and the clones run on",
    async () => {
      if (!PAGING_HOST) return console.log("Debian's Xen does not page: --memory ondemand is refused (last test)");
      await waitFor(`${PARENT} ticking`, () => lastTick(PARENT) >= 1, BOOT_MS, [PARENT]);
      // Clone IDs are free again once the earlier clones are gone: their console logs must not speak for the new ones.
      for (const c of [1, 2, 3, 4]) rmSync(consoleLogPath(`${PARENT}.${c}`), { force: true });
      const r = await run([BINARY, "fork", PARENT, "--clones", "2", "--memory", "ondemand", "--backend", "xen", "--json"], FORK_MS);
      if (r.status !== 0) throw await fail(`fork --memory ondemand failed (${r.status}): ${r.stderr}`);
      const result = JSON.parse(r.stdout);
      expectForkResult(result, "xen");
      expect(result.memory).toBe("ondemand");
      expect(result.eagerCopy).toBeUndefined();
      expect(result.onDemand.imagePages).toBe((128 << 20) / 4096);
      expect(result.onDemand.pagesPagedOut).toBeGreaterThan(result.onDemand.imagePages - 64);
      expect(result.onDemand.zeroPages).toBeGreaterThan(0);
      console.log(`fork --memory ondemand: ${JSON.stringify({ totalMs: result.totalMs, pausedMs: result.pausedMs, ...result.onDemand })}`);
      const clones = result.clones as Array<{ name: string; cloneId: number }>;
      for (const { name, cloneId } of clones) {
        await waitFor(`${name} printing id ${cloneId}`, () => idsSeen(name, { skipFirst: true }).has(String(cloneId)), FORK_MS, [
          name,
        ]).catch(async (e) => {
          throw await fail(`${name} never printed its id: ${firstLine(e)}`);
        });
      }
      // What each clone's pager counted so far, as `ls --json` shows it: a share of the image, never all of it.
      const listed = JSON.parse((await run([BINARY, "ls", "--backend", "xen", "--json"])).stdout) as Array<{
        name: string;
        memory?: { faults: number; pagesFetched: number; pagesZeroFilled: number };
      }>;
      for (const { name } of clones) {
        const memory = listed.find((row) => row.name === name)?.memory;
        console.log(`${name}: ${JSON.stringify(memory)}`);
        expect(memory!.faults).toBeGreaterThan(0);
        expect(memory!.pagesFetched).toBeGreaterThan(0);
        expect(memory!.pagesFetched).toBeLessThan(result.onDemand.imagePages - result.onDemand.zeroPages);
      }
      // The parent ends; the clones' pages come from the frozen image the agent keeps, not from it.
      expect((await run(["xl", "destroy", PARENT])).status).toBe(0);
      const before = clones.map((c) => lastTick(c.name));
      await waitFor(
        "both clones ticking on after the parent ended",
        () => clones.every((c, k) => lastTick(c.name) > before[k]! + 2),
        BOOT_MS,
        clones.map((c) => c.name),
      ).catch(async (e) => {
        throw await fail(`the clones stopped ticking (last ticks ${clones.map((c) => lastTick(c.name)).join(", ")}): ${firstLine(e)}`);
      });
      for (const { name } of clones) expect((await run([BINARY, "kill", name, "--backend", "xen"])).status).toBe(0);
    },
    FORK_MS * 2,
  );

  test(
    "snowflock pool sfpool --clones 2 keeps shells ready (paged out on the paging host); fork --clones 2 takes them and its clones " +
      "print their IDs; kill of the parent ends clones and ready shells alike",
    async () => {
      const memory = PAGING_HOST ? ["--memory", "ondemand"] : [];
      await createDomU(POOLED);
      await waitFor(`${POOLED} ticking`, () => lastTick(POOLED) >= 1, BOOT_MS, [POOLED]);
      const pooled = await run([BINARY, "pool", POOLED, "--clones", "2", ...memory, "--backend", "xen", "--json"], FORK_MS);
      if (pooled.status !== 0) throw await fail(`pool failed (${pooled.status}): ${pooled.stderr}`);
      const pool = JSON.parse(pooled.stdout);
      console.log(`pool: ${JSON.stringify(pool)}`);
      expect(pool.shells.map((s: { name: string }) => s.name)).toEqual([`${POOLED}.1`, `${POOLED}.2`]);
      expect(pool.built).toBe(2);
      if (PAGING_HOST) expect(pool.framesPagedOut).toBeGreaterThan((128 << 20) / 4096 - 64);
      const listed = JSON.parse((await run([BINARY, "ls", "--backend", "xen", "--json"])).stdout) as Array<{ name: string; state: string }>;
      expect(listed.filter((row) => row.state === "ready shell").map((row) => row.name)).toEqual([`${POOLED}.1`, `${POOLED}.2`]);

      const r = await run([BINARY, "fork", POOLED, "--clones", "2", ...memory, "--backend", "xen", "--json"], FORK_MS);
      if (r.status !== 0) throw await fail(`fork from ready shells failed (${r.status}): ${r.stderr}`);
      const result = JSON.parse(r.stdout);
      expectForkResult(result, "xen");
      console.log(`fork from ready shells: ${JSON.stringify({ totalMs: result.totalMs, pausedMs: result.pausedMs, ...result.onDemand })}`);
      expect(result.shellsReady).toBe(2);
      if (PAGING_HOST) expect(result.onDemand.pageOutMs).toBe(0);
      expect(result.clones.map((c: { name: string; cloneId: number }) => [c.name, c.cloneId])).toEqual([
        [`${POOLED}.1`, 1],
        [`${POOLED}.2`, 2],
      ]);
      for (const c of [1, 2]) {
        const name = `${POOLED}.${c}`;
        await waitFor(`${name} printing id ${c}`, () => idsSeen(name, { skipFirst: true }).has(String(c)), FORK_MS, [name]).catch(
          async (e) => {
            throw await fail(`${name} never printed its id: ${firstLine(e)}`);
          },
        );
      }
      // One more shell, then the parent goes with its clones and that shell.
      const again = await run([BINARY, "pool", POOLED, "--clones", "1", ...memory, "--backend", "xen", "--json"], FORK_MS);
      expect(JSON.parse(again.stdout).shells.map((s: { name: string }) => s.name)).toEqual([`${POOLED}.3`]);
      const killed = await run([BINARY, "kill", POOLED, "--backend", "xen", "--json"]);
      expect(killed.status).toBe(0);
      expect((JSON.parse(killed.stdout) as Array<{ name: string }>).map((d) => d.name).sort()).toEqual(
        [POOLED, `${POOLED}.1`, `${POOLED}.2`, `${POOLED}.3`].sort(),
      );
      await expectGone([POOLED, `${POOLED}.1`, `${POOLED}.2`, `${POOLED}.3`]);
    },
    FORK_MS * 2,
  );

  test(
    "a 256 MiB domU fills 32 MiB with a seeded dataset and runs sf clone 4: each clone hashes its quarter and exits with " +
      "its digest; the parent's sf exit is refused and its sf join reports the four, equal to the host's; a clone's " +
      "forged request into its parent's node is refused",
    async () => {
      // The host's digests, from the same generator (checked against src/guest/dataset.ts by test/unit/xen-domu-tools.test.ts).
      const data = new Uint8Array(await new Response(Bun.spawn([DATASET, String(JOB_SEED), String(JOB_BYTES)]).stdout).arrayBuffer());
      expect(data.length).toBe(JOB_BYTES);
      const quarter = JOB_BYTES / 4;
      const expected = [0, 1, 2, 3].map((i) => sha256Hex(data.subarray(i * quarter, (i + 1) * quarter)));
      await createDomU(JOB, "sfjob=1", ["memory=256", "maxmem=256"]);
      await waitFor(`${JOB}: sf clone gave`, () => consoleText(JOB).includes("sf clone gave"), FORK_MS, [JOB]).catch(async (e) => {
        throw await fail(`${JOB}: sf clone never returned: ${firstLine(e)}`);
      });
      const digests: string[] = [];
      for (const c of [1, 2, 3, 4]) {
        const name = `${JOB}.${c}`;
        const line = new RegExp(`snowflock-domu: slice ${c} ([0-9a-f]{64})`);
        await waitFor(`${name} hashing its quarter`, () => line.test(consoleText(name)), FORK_MS, [name]).catch(async (e) => {
          throw await fail(`${name} never printed its digest: ${firstLine(e)}`);
        });
        digests.push(line.exec(consoleText(name))![1]!);
        // XenStore refuses a clone's write into its parent's request node.
        expect(consoleText(name)).toContain("snowflock-domu: forged request refused");
      }
      expect(digests).toEqual(expected);
      if (PAGING_HOST) {
        // Each clone fetched its quarter and what it ran on: a small share of the domU's 65,536 pages.
        const listed = JSON.parse((await run([BINARY, "ls", "--backend", "xen", "--json"])).stdout) as Array<{
          name: string;
          memory?: { faults: number; pagesFetched: number; faultServiceHistogram: unknown };
        }>;
        for (const c of [1, 2, 3, 4]) {
          const memory = listed.find((row) => row.name === `${JOB}.${c}`)?.memory;
          console.log(`${JOB}.${c}: ${JSON.stringify(memory)}`);
          expect(memory!.pagesFetched).toBeGreaterThan(quarter / 4096);
          expect(memory!.pagesFetched).toBeLessThan((256 << 20) / 4096 / 4);
        }
      }
      for (const c of [1, 2, 3, 4]) {
        const domid = (await run(["xl", "domid", `${JOB}.${c}`])).stdout.trim();
        expect((await run(["xenstore-write", `/local/domain/${domid}/snowflock/go`, "1"])).status).toBe(0);
      }
      await waitFor(`${JOB}: join`, () => consoleHasLine(JOB, "join "), FORK_MS, [JOB]);
      expect(consoleText(JOB)).toContain("snowflock-domu: parent exit refused");
      // Each clone's own exit status (40 + its ID) and digest.
      expect(consoleText(JOB)).toContain(`snowflock-domu: join 4 ${expected.map((d, i) => `${i + 1}=${41 + i}:${d}`).join(" ")}`);
      // The agent gives the clones memory on demand where Xen pages (the paging host), else a copy.
      expect(agentOutput()).toContain(`memory ${PAGING_HOST ? "ondemand" : "eager"}`);
      if (PAGING_HOST) {
        // The agent's last word on each clone's memory, once its domain has gone.
        await waitFor(
          "the agent's lines on the ended clones",
          () => agentOutput().match(new RegExp(`a clone of ${JOB}\\) ended: \\d+ faults`, "g"))?.length === 4,
          30_000,
        );
      }
      // No clone left, not even as a dying domain held by a pager that was never stopped.
      await expectGone([1, 2, 3, 4].map((c) => `${JOB}.${c}`));
      // The parent runs on after its join, as clone 0.
      await waitFor(`${JOB} ticking with id 0`, () => idsSeen(JOB).has("0"), BOOT_MS, [JOB]);
      await run(["xl", "destroy", JOB]);
    },
    FORK_MS * 3,
  );

  test(
    "paging host: a 256 MiB domU frees 128 MiB, then sf clone 1: its clone, filling 128 MiB, fetches at least 10x fewer pages " +
      "with the free-pages heuristic than with sf clone --no-heuristic free-pages; the same digest both ways",
    async () => {
      if (!PAGING_HOST) return console.log("Debian's Xen does not page: the eager copy skips zero pages whatever the guest freed");
      const data = new Uint8Array(await new Response(Bun.spawn([DATASET, String(FILL_SEED), String(FILL_BYTES)]).stdout).arrayBuffer());
      const expected = sha256Hex(data);
      const fetched: Record<string, number> = {};
      for (const [parent, heuristic] of [
        [FREE_ON, "on"],
        [FREE_OFF, "off"],
      ] as const) {
        const clone = `${parent}.1`;
        await createDomU(parent, `sffree=${heuristic}`, ["memory=256", "maxmem=256"]);
        await waitFor(`${parent}: sf clone gave`, () => consoleText(parent).includes("sf clone gave"), FORK_MS, [parent]).catch(
          async (e) => {
            throw await fail(`${parent}: sf clone never returned: ${firstLine(e)}`);
          },
        );
        const line = /snowflock-domu: filled ([0-9a-f]{64})/;
        await waitFor(`${clone} filling 128 MiB`, () => line.test(consoleText(clone)), FORK_MS, [clone]).catch(async (e) => {
          throw await fail(`${clone} never printed its digest: ${firstLine(e)}`);
        });
        expect(line.exec(consoleText(clone))![1]).toBe(expected);
        const listed = JSON.parse((await run([BINARY, "ls", "--backend", "xen", "--json"])).stdout) as Array<{
          name: string;
          memory?: { pagesFetched: number; pagesZeroFilled: number };
        }>;
        const memory = listed.find((row) => row.name === clone)?.memory;
        console.log(`${clone} (free-pages ${heuristic}): ${JSON.stringify(memory)}`);
        fetched[heuristic] = memory!.pagesFetched;
        const domid = (await run(["xl", "domid", clone])).stdout.trim();
        expect((await run(["xenstore-write", `/local/domain/${domid}/snowflock/go`, "1"])).status).toBe(0);
        await waitFor(`${parent}: join`, () => consoleHasLine(parent, "join "), FORK_MS, [parent]);
        expect(consoleText(parent)).toContain(`snowflock-domu: join 1 1=0:${expected}`);
        await run(["xl", "destroy", parent]);
        await expectGone([parent, clone]);
      }
      // The agent heard how much the guest held free (with the heuristic).
      expect(agentOutput()).toMatch(/clone 1 \(the guest holds [\d,]+ free pages, zeroed\)/);
      expect(fetched.off!).toBeGreaterThanOrEqual(10 * fetched.on!);
    },
    FORK_MS * 4,
  );

  test("fork refuses what it cannot do, in one line: an unknown domain, dom0, a bad count, --memory ondemand", async () => {
    const cases: Array<[string[], string]> = [
      [["fork", "nosuchdomain", "--clones", "1"], "no Xen domU named 'nosuchdomain'"],
      [["fork", "0", "--clones", "1"], "no Xen domU named '0'"],
      [["fork", PARENT, "--clones", "0"], "bad --clones '0'"],
      ...(PAGING_HOST
        ? []
        : ([
            [
              ["fork", PARENT, "--clones", "2", "--memory", "ondemand"],
              "--memory ondemand needs Xen's memory paging: this Xen is built without memory paging (CONFIG_MEM_PAGING)",
            ],
          ] as Array<[string[], string]>)),
      [["run", "hello"], "snowflock run does not run on xen"],
    ];
    for (const [args, message] of cases) {
      const r = await run([BINARY, ...args, "--backend", "xen"]);
      expect(r.status).not.toBe(0);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
      expect(r.stderr).toContain(message);
    }
  });
});
