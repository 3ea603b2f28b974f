/**
 * The Xen backend on a real Xen 4.17 host. These tests run inside dom0 of the nested Xen host
 * (`bun run test:xen`, i.e. test/xen/run.sh -- bun test test/xen/): they start a PVH domU with
 * `xl create` (the busybox guest build-host.sh puts in SNOWFLOCK_XEN_DOMU_DIR, which prints
 * "snowflock-domu: tick N" every second), then check `snowflock doctor` as the compiled baseline
 * executable (dist/snowflock-baseline, `bun test/xen/build-baseline.ts`) reports this Xen, and
 * drive the bindings (src/backend/xen/host.ts) against the running domain.
 *
 * Anywhere without /dev/xen/privcmd they skip with one line — unless SNOWFLOCK_REQUIRE_XEN=1
 * (as test:xen sets), where a missing Xen fails the run instead.
 */
import { afterAll, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { XEN_RELEASES } from "../../src/backend/xen/abi.ts";
import type { XenHost } from "../../src/backend/xen/host.ts";
import { BINARY, bootDomU, consoleText, describeXen, diagnosis as describeState, DOMU_DIR, run, waitFor } from "./support/xen-test.ts";

/** The nested host booted Xen built with memory paging (SNOWFLOCK_XEN_HYPERVISOR=paging). */
const PAGING_HOST = process.env.SNOWFLOCK_REQUIRE_PAGING === "1";

const DOMU = "sf-test-pvh";
const ABI = XEN_RELEASES["4.17"]!;

/** The highest "tick N" the domU has printed on its console so far (0 before the first). */
function ticks(): number {
  const all = [...consoleText(DOMU).matchAll(/snowflock-domu: tick (\d+)/g)];
  return all.length === 0 ? 0 : Number(all[all.length - 1]![1]);
}

const sleep = (ms: number) => Bun.sleep(ms);
const diagnosis = () => describeState([DOMU]);

describeXen("Xen 4.17 dom0: snowflock doctor and the bindings against a running PVH domU", () => {
  let host: XenHost | undefined;
  let domid = -1;

  const xen = async (): Promise<XenHost> => {
    if (!host) host = (await import("../../src/backend/xen/host.ts")).openXen();
    return host;
  };

  /** The domU the first test started is still there and not shut down (pvh.cfg preserves it if it crashes or reboots). */
  const expectDomuAlive = async () => {
    expect(domid).toBeGreaterThan(0);
    const d = (await xen()).domain(domid);
    if (!d || d.shutdown || d.dying) {
      const state = !d ? "gone" : d.dying ? "dying" : `shut down (SHUTDOWN_* code ${d.shutdownReason})`;
      throw new Error(`the test domU ${DOMU} (domid ${domid}) is ${state}\n${await diagnosis()}`);
    }
  };

  afterAll(async () => {
    host?.close();
    await run(["xl", "destroy", DOMU]);
  });

  test("xl create starts the PVH test domU, and its console ticks every second", async () => {
    expect(existsSync(join(DOMU_DIR, "pvh.cfg"))).toBe(true);
    const ms = await bootDomU(DOMU, [join(DOMU_DIR, "pvh.cfg")], () => ticks() >= 2, 300_000);
    const id = await run(["xl", "domid", DOMU]);
    expect(id.status).toBe(0);
    domid = Number(id.stdout.trim());
    expect(domid).toBeGreaterThan(0);
    console.log(`domU ${DOMU} (domid ${domid}) ticking ${ms} ms after xl create`);
  });

  test(
    "snowflock doctor --backend xen --json (dist/snowflock-baseline): Xen 4.17, pv and hvm, no " +
      "mem-sharing fork, paging and memory on demand only on the paging host",
    async () => {
      expect(existsSync(BINARY)).toBe(true); // bun test/xen/build-baseline.ts
      const r = await run([BINARY, "doctor", "--backend", "xen", "--json"]);
      expect(r.stderr).toBe("");
      expect(r.status).toBe(0);
      const report = JSON.parse(r.stdout);
      expect(report.backend).toBe("xen");
      expect(Object.keys(report.backends)).toEqual(["xen"]);
      const x = report.backends.xen;
      expect(x.available).toBe(true);
      expect(x.version).toMatch(/^4\.17\./);
      expect(x.release).toBe("4.17");
      expect(x.capabilities).toContain("xen-3.0-x86_64");
      expect(x.capabilities).toContain("hvm-3.0-x86_64");
      // Debian's binary leaves shadow paging out; the paging host's Xen is built from the source's defaults, which keep it.
      expect(x.guestTypes).toEqual({ pv: true, hvm: true, hap: true, shadow: PAGING_HOST });
      expect(x.cpu.svm).toBe(true);
      expect(x.domains).toBeGreaterThanOrEqual(2); // dom0 and the test domU
      expect(x.memSharingFork.available).toBe(false);
      expect(x.memSharingFork.reason).toMatch(/without memory sharing.*ENOSYS/);
      if (PAGING_HOST)
        expect(x.paging).toEqual({ available: true, detail: "built in, HAP, PV dom0 (HVM/PVH domains without passthrough or PoD)" });
      else {
        expect(x.paging.available).toBe(false);
        expect(x.paging.reason).toMatch(/without memory paging.*ENOSYS; rebuild Xen with CONFIG_UNSUPPORTED=y, CONFIG_MEM_PAGING=y/);
      }
      expect(x.memoryOnDemand).toBe(PAGING_HOST);
      expect(x.cloneMemory).toBe(PAGING_HOST ? "ondemand" : "eager");
    },
  );

  test("snowflock doctor without --backend detects Xen and says the same in text", async () => {
    const r = await run([BINARY, "doctor"]);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^backend +xen \(dom0\)$/m);
    expect(r.stdout).toMatch(/^xen +4\.17\.\S+ \(domctl interface 0x15\)$/m);
    expect(r.stdout).toMatch(PAGING_HOST ? /^virt caps +pv hvm hap shadow$/m : /^virt caps +pv hvm hap$/m);
    expect(r.stdout).toMatch(/^mem-sharing fork +no: /m);
    expect(r.stdout).toMatch(PAGING_HOST ? /^paging +yes: /m : /^paging +no: .*README: "Memory on demand on Xen"/m);
    expect(r.stdout).toMatch(PAGING_HOST ? /^memory-on-demand +yes \(paging\): /m : /^memory-on-demand +no: .*"eager"/m);
  });

  test("openXen(): version 4.17, capabilities, physinfo", async () => {
    const h = await xen();
    expect(h.version.major).toBe(4);
    expect(h.version.minor).toBe(17);
    expect(h.abi).toBe(ABI);
    expect(h.capabilities.split(" ")).toContain("hvm-3.0-x86_64");
    const info = h.physinfo();
    expect(info.nrCpus).toBeGreaterThanOrEqual(1);
    expect(info.virtCaps.pv).toBe(true);
    expect(info.virtCaps.hvm).toBe(true);
    expect(info.virtCaps.hap).toBe(true);
    expect(info.cpu).toEqual({ vmx: false, svm: true });
    expect(info.freePages).toBeLessThan(info.totalPages);
  });

  test("listDomains() shows dom0 and the domU by name", async () => {
    await expectDomuAlive();
    const domains = (await xen()).listDomains();
    const dom0 = domains.find((d) => d.domid === 0)!;
    expect(dom0.name).toBe("Domain-0");
    expect(dom0.hvm).toBe(false); // a PV dom0
    const domu = domains.find((d) => d.name === DOMU);
    expect(domu).toBeDefined();
    expect(domu!.domid).toBe(domid);
    expect(domu!.hvm).toBe(true); // PVH runs in an HVM container
    expect(domu!.hap).toBe(true);
    expect(domu!.paused).toBe(false);
    expect(domu!.dying).toBe(false);
    expect(domu!.onlineVcpus).toBe(1);
    expect(domu!.maxVcpuId).toBe(0);
    expect(domu!.maxMemKiB).toBeGreaterThanOrEqual(128 * 1024);
    expect(domu!.uuid).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    expect((await xen()).domain(domid)?.name).toBe(DOMU);
    expect((await xen()).domain(0x7fef)).toBeUndefined(); // DOMID_FIRST_RESERVED - 1: no such domain
  });

  test("pause(): the domain is paused, xl agrees, and its console stops", async () => {
    await expectDomuAlive();
    const h = await xen();
    h.pause(domid);
    expect(h.domain(domid)!.paused).toBe(true);
    const list = await run(["xl", "list", DOMU]);
    expect(list.stdout.split("\n").find((l) => l.startsWith(`${DOMU} `))).toMatch(/\s[r-][b-]p[s-][c-][d-]\s/);
    await sleep(1500); // whatever the guest wrote before the pause reaches the log
    const before = ticks();
    await sleep(3000);
    expect(ticks()).toBe(before);
  });

  test("unpause(): it runs again and the console ticks on", async () => {
    await expectDomuAlive();
    const h = await xen();
    const before = ticks();
    h.unpause(domid);
    expect(h.domain(domid)!.paused).toBe(false);
    await waitFor("a new tick after unpause", () => ticks() > before + 1, 120_000, [DOMU]);
  });

  test("hvmContext() of the PVH domU parses: HEADER, CPU, LAPIC, ... END", async () => {
    await expectDomuAlive();
    const h = await xen();
    const ctx = h.hvmContext(domid);
    expect(ctx.header.magic).toBe(ABI.constants.HVM_FILE_MAGIC);
    expect(ctx.header.version).toBe(ABI.constants.HVM_FILE_VERSION);
    expect(ctx.header.gtscKhz).toBeGreaterThan(0);
    const names = ctx.records.map((r) => r.type);
    expect(names[0]).toBe("HEADER");
    expect(names.at(-1)).toBe("END");
    expect(names).toContain("LAPIC");
    const cpu = ctx.records.filter((r) => r.type === "CPU");
    expect(cpu.map((r) => r.instance)).toEqual([0]); // one vCPU
    const last = ctx.records.at(-1)!;
    expect(last.offset + last.length).toBe(ctx.blob.byteLength);
    // Xen pauses the domain while it writes the blob, and lets it go again.
    expect(h.domain(domid)!.paused).toBe(false);
    // vCPU 0's registers: a 64-bit kernel's RIP and page tables.
    const vcpu = h.vcpuContext(domid, 0);
    expect(vcpu.get64("user_regs.rip")).toBeGreaterThan(0xffff800000000000n);
    expect(vcpu.get64("ctrlreg[3]")).toBeGreaterThan(0n);
  });

  test("hvmContext() of the PV dom0 and pause() of a missing domain are refused", async () => {
    const h = await xen();
    expect(() => h.hvmContext(0)).toThrow(/PV domain: it has no HVM context/);
    expect(() => h.pause(0x7fef)).toThrow(/no Xen domain/);
  });

  test("the domU keeps running through all of it", async () => {
    await expectDomuAlive();
    const before = ticks();
    await waitFor("two more ticks", () => ticks() >= before + 2, 120_000, [DOMU]);
    await expectDomuAlive();
    // Ticking is the proof it runs; a runnable vCPU waiting for a CPU is neither running nor blocked.
    const d = (await xen()).domain(domid)!;
    expect({ paused: d.paused, shutdown: d.shutdown, dying: d.dying }).toEqual({ paused: false, shutdown: false, dying: false });
  });
});
