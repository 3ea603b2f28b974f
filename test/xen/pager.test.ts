/**
 * snowflock's Xen pager against a real domain, in dom0 of the nested Xen host built with memory
 * paging (`SNOWFLOCK_XEN_HYPERVISOR=paging`, part of `bun run test:xen`): a PVH domU created paused
 * has its RAM copied into a memfd image and paged out; then it runs with every page it touches
 * brought in by the pager on first touch, copied from that image (as a fork's pagers do). On a Xen without
 * paging (Debian's own) this file checks only that the pager refuses in one line.
 */
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { xenFeatures } from "../../src/backend/xen/features.ts";
import { openXen, type XenHost } from "../../src/backend/xen/host.ts";
import { captureImage, type MemoryImage } from "../../src/backend/xen/memory-image.ts";
import { attachPager, type XenPager } from "../../src/backend/xen/pager.ts";
import { PAGE_SIZE } from "../../src/guest-memory/layout.ts";
import { formatPageServer } from "../../src/memory/page-server-address.ts";
import { close } from "../../src/sys/files.ts";
import { consoleText, describeXen, diagnosis, DOMU_DIR, run, waitFor } from "./support/xen-test.ts";

const DOMU = "pgdom";
/** pvh.cfg's memory = 128 (MiB), all of it RAM from frame 0 up. */
const RAM_PAGES = (128 << 20) / PAGE_SIZE;
const RUN_MS = 900_000;

describeXen("the Xen pager (memory on demand for clone shells)", () => {
  let host: XenHost | undefined;
  let image: MemoryImage | undefined;
  let pager: XenPager | undefined;
  const paging = () => (host ??= openXen()) && xenFeatures(host).paging.available === true;

  afterAll(async () => {
    await run(["xl", "destroy", DOMU]);
    await pager?.stop();
    if (image) close(image.fd);
    host?.close();
  });

  async function createPaused(): Promise<number> {
    await run(["xl", "destroy", DOMU]);
    // Without `quiet`, the kernel's first line ("Linux version ...") reaches the console.
    const created = await run(["xl", "create", "-p", join(DOMU_DIR, "pvh.cfg"), `name="${DOMU}"`, 'extra="console=hvc0"']);
    if (created.status !== 0) throw new Error(`xl create -p ${DOMU} failed: ${created.stderr}`);
    return Number((await run(["xl", "domid", DOMU])).stdout.trim());
  }

  test("this host's Xen pages when the run asks for it (SNOWFLOCK_REQUIRE_PAGING=1: the paging hypervisor)", () => {
    if (process.env.SNOWFLOCK_REQUIRE_PAGING === "1") expect(paging()).toBe(true);
    else console.log(`paging here: ${paging()}`);
  });

  test("without paging, attaching a pager is refused in one line naming CONFIG_MEM_PAGING", async () => {
    if (paging()) return console.log("this Xen pages: the refusal is checked on the stock host");
    const domid = await createPaused();
    await expect(attachPager(domid, RAM_PAGES, 60_000)).rejects.toThrow(
      `Xen would not page domain ${domid}: this Xen is built without memory paging (CONFIG_MEM_PAGING)`,
    );
    await run(["xl", "destroy", DOMU]);
  });

  test(
    "a PVH domU created paused, its RAM paged out, starts its kernel with each page it touches brought in by the pager " +
      "(instruction fetches and page-table walks too); most of its pages are never fetched",
    async () => {
      if (!paging()) return console.log("no paging on this Xen: skipped here, run on the paging host");
      const domid = await createPaused();
      const xen = host!;
      const memory = xen.foreignMemory();
      try {
        image = captureImage(memory, domid, RAM_PAGES, DOMU);
      } finally {
        memory.close();
      }
      const nonZero = RAM_PAGES - image.zeroPages;
      let shown = 0;
      pager = await attachPager(domid, RAM_PAGES, 600_000, (done, total) => {
        if (done - shown >= 8192) console.log(`paging out: ${(shown = done)} of ${total}`);
      });
      const { pagedOut, present, evictMs } = pager.attached;
      console.log(
        `paged out ${pagedOut} of ${RAM_PAGES} frames in ${(evictMs / 1000).toFixed(1)} s (${((evictMs * 1000) / RAM_PAGES).toFixed(0)} µs per frame); kept present: ${present.length}`,
      );
      expect(pagedOut).toBeGreaterThan(RAM_PAGES - 64);
      expect((await xen.domain(domid))!.totPages).toBeLessThan(64 + present.length);

      const { loadMs } = await pager.serve(
        {
          server: formatPageServer({ kind: "image", path: `/proc/${process.pid}/fd/${image.fd}` }),
          nonZeroPages: image.nonZeroPages,
          freePages: new Uint8Array(image.nonZeroPages.byteLength),
          prefetch: true,
          eagerFrames: [],
          timeoutMs: 60_000,
        },
        120_000,
      );
      console.log(`pager serving (eager and present frames in after ${loadMs.toFixed(0)} ms); unpausing ${DOMU}`);
      xen.unpause(domid);
      const failure = pager.failed.then((error) => {
        throw error;
      });
      // The kernel's first console line: far into its start, a few thousand faults (all of its boot would be ~17,000,
      // minutes under CI's load; fork.test.ts runs clones on the pager for real).
      try {
        const ms = await Promise.race([
          waitFor(`${DOMU}'s kernel to print`, () => consoleText(DOMU).includes("Linux version"), RUN_MS, [DOMU]),
          failure,
        ]);
        console.log(`${DOMU}'s kernel printing ${(ms / 1000).toFixed(1)} s after its unpause`);
      } catch (error) {
        console.log(await diagnosis([DOMU]));
        throw error;
      }
      // Counted as they arrive, timed as they are served: a snapshot taken while the domain runs can
      // catch faults in service. Paused, its last faults finish and the counts agree.
      xen.pause(domid);
      const allServed = () => {
        const s = pager!.stats();
        return s.faultServiceHistogram.reduce((n, b) => n + b.count, 0) === s.faults;
      };
      await waitFor("the pager to finish the faults in service", allServed, 30_000);
      const stats = pager.stats();
      console.log(JSON.stringify(stats));
      expect(stats.faults).toBeGreaterThan(0);
      expect(stats.pagesFetched).toBeGreaterThan(0);
      expect(stats.pagesFetched).toBeLessThan(nonZero);
      expect(stats.pagesZeroFilled).toBeGreaterThan(0);
      expect(stats.faultServiceHistogram.reduce((n, b) => n + b.count, 0)).toBe(stats.faults);
      // Every page it fetched was copied from the image, and only those.
      expect(stats.bytesReceived).toBe(stats.pagesFetched * PAGE_SIZE);
    },
    RUN_MS + 600_000,
  );
});
