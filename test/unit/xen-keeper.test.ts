import { describe, expect, test } from "bun:test";
import { fstatSync, openSync } from "node:fs";
import { Keeper } from "../../src/backend/xen/keeper.ts";
import type { XenPager } from "../../src/backend/xen/pager.ts";
import { faultCounters, readFaultStats } from "../../src/memory/fault-counters.ts";

/** A stand-in pager (no Worker, no domain): its stop takes `stopMs`, as a real one's can under emulation. */
function pagerOf(domid: number, stopMs: number, stops: number[]): XenPager {
  const counters = faultCounters();
  return {
    domid,
    attached: { pagedOut: 0, present: [], evictMs: 0 },
    serve: async () => ({ loadMs: 0 }),
    stats: () => readFaultStats(counters, 0),
    failed: new Promise<Error>(() => {}),
    stop: async () => {
      stops.push(domid);
      await Bun.sleep(stopMs);
    },
  };
}

describe("the Xen keeper (pagers of clones with memory on demand)", () => {
  test("a pager whose stop outlasts the next sweep is stopped and reported once; its round closes once", async () => {
    const lines: string[] = [];
    const stops: number[] = [];
    const alive = new Set([11, 12]);
    const keeper = new Keeper(
      (domid) => alive.has(domid),
      () => {},
      (line) => lines.push(line),
    );
    // The round's image: any open fd stands for the memfd; the round's end must close it.
    const imageFd = openSync("/dev/null", "r");
    keeper.keep({ parent: "p", imageFd, pagers: [pagerOf(11, 200, stops), pagerOf(12, 200, stops)] });
    alive.delete(11);
    alive.delete(12);
    await Promise.all([keeper.sweep(), keeper.sweep(), Bun.sleep(50).then(() => keeper.sweep())]);
    await keeper.sweep();
    expect(stops.sort()).toEqual([11, 12]);
    expect(lines.filter((l) => l.includes("(a clone of p) ended")).length).toBe(2);
    expect(() => fstatSync(imageFd)).toThrow(/EBADF/);
    expect(keeper.clones()).toEqual([]);
    await keeper.stopAll();
  });

  test("a clone still running keeps its pager and its round; stopAll then stops both", async () => {
    const stops: number[] = [];
    const alive = new Set([21, 22]);
    const keeper = new Keeper(
      (domid) => alive.has(domid),
      () => {},
      () => {},
    );
    keeper.keep({ parent: "q", pagers: [pagerOf(21, 0, stops), pagerOf(22, 0, stops)] });
    alive.delete(21);
    await keeper.sweep();
    expect(stops).toEqual([21]);
    expect(keeper.clones().map((c) => c.domid)).toEqual([22]);
    await keeper.stopAll();
    expect(stops).toEqual([21, 22]);
    expect(keeper.clones()).toEqual([]);
  });
});
