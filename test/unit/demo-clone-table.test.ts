/** The demo's per-clone table: memory path by host, heuristics' pages, and a clone's answer checked against the host's. */
import { expect, test } from "bun:test";
import { cloneRows, cloneTable } from "../../demo/clone-table.ts";
import type { VmResult } from "../../src/vmm/vmm.ts";

const expected = ["slice 1 0 100 aa", "slice 2 100 100 bb"];

function result(console: string[], exitStatus = 0): VmResult {
  const memory = {
    faults: 9,
    pagesFetched: 40,
    pagesMulticast: 3,
    pagesZeroFilled: 10,
    pagesFreeFilled: 4,
    pagesAllocationFilled: 1,
    bytesReceived: 1,
  };
  const clone = (cloneId: number, host: string) => ({
    name: `p.${cloneId}`,
    host,
    cloneId,
    pid: 1,
    readyMs: 12.4,
    restoredMs: 1,
    runningMs: 2,
    exitStatus,
    memory,
  });
  return {
    console,
    forks: [
      {
        parent: "p",
        memory: "ondemand",
        pausedMs: 1,
        descriptorMs: 1,
        descriptorBytes: 10,
        clones: [clone(1, "h1"), clone(2, "h2")],
        failed: [],
        totalMs: 20,
      },
    ],
  } as unknown as VmResult;
}

test("a clone on the parent's host is on demand, one elsewhere by mcdist; avoided pages split by heuristic", () => {
  const rows = cloneRows(result([...expected, "granted 2"]), expected, { parentHost: "h1", transport: "packet" });
  expect(rows.map((r) => [r.clone, r.memory, r.matched])).toEqual([
    ["p.1", "on demand", true],
    ["p.2", "on demand, mcdist packet", true],
  ]);
  expect(cloneTable(rows).cells[0]).toEqual(["p.1", "h1", "on demand", "40", "3", "5/4/1", "12 ms", "ok (= host)"]);
});

test("a wrong answer, a missing line or a clone that failed is not a match", () => {
  const wrong = cloneRows(result(["slice 1 0 100 ff", "granted 2"]), expected, { parentHost: "h1" });
  expect(wrong.map((r) => r.matched)).toEqual([false, false]);
  expect(cloneTable(wrong).cells.map((c) => c.at(-1))).toEqual(["WRONG: slice 1 0 100 ff", "WRONG: no line"]);
  expect(cloneRows(result([...expected], 70), expected).every((r) => !r.matched)).toBe(true);
});
