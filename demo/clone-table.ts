/**
 * The demo's table of one `snowflock run ... --json`: a row per clone of its first clone round —
 * where it ran, how it got its memory, what that cost (pages fetched, pages that came by multicast
 * unasked, pages each avoidance heuristic spared), how long it took to run, and whether what it
 * printed is the host's answer.
 */
import type { VmResult } from "../src/vmm/vmm.ts";

export interface CloneRow {
  clone: string;
  host: string;
  memory: string;
  fetched: number | undefined;
  multicast: number | undefined;
  /** Pages spared, by heuristic (undefined: the clone reported no memory counters, as copy-on-write clones do not). */
  knownZero: number | undefined;
  freePages: number | undefined;
  allocationHints: number | undefined;
  runningMs: number;
  /** The clone's own console line (what sf_clone's caller printed for it), and whether it is the host's. */
  line: string | undefined;
  matched: boolean;
}

/**
 * Rows for the first clone round of `result`. `expected[i]` is the line clone i + 1 must have
 * printed (the guest's console holds every clone's line); `parentHost` is the host the parent ran
 * on, for a family spread over a cluster, and `transport` how clones on other hosts got pages.
 */
export function cloneRows(result: VmResult, expected: string[], where: { parentHost?: string; transport?: string } = {}): CloneRow[] {
  const round = result.forks[0];
  if (!round) return [];
  return round.clones.map((c) => {
    const m = c.memory;
    const remote = c.host !== undefined && c.host !== where.parentHost;
    const want = expected[c.cloneId - 1];
    const line =
      want !== undefined && result.console.includes(want)
        ? want
        : result.console.find((l) => /^(slice|count|alloc) /.test(l) && l.split(" ")[1] === String(c.cloneId));
    const free = m?.pagesFreeFilled ?? 0;
    const allocation = m?.pagesAllocationFilled ?? 0;
    return {
      clone: c.name,
      host: c.host ?? "-",
      memory: round.memory === "cow" ? "copy-on-write" : remote ? `on demand, mcdist ${where.transport ?? ""}`.trimEnd() : "on demand",
      fetched: m?.pagesFetched,
      multicast: m?.pagesMulticast,
      knownZero: m && m.pagesZeroFilled - free - allocation,
      freePages: m && free,
      allocationHints: m && allocation,
      runningMs: c.readyMs,
      line,
      matched: want !== undefined && line === want && (c.exitStatus ?? 0) === 0,
    };
  });
}

const count = (n: number | undefined) => (n === undefined ? "-" : String(n));

/** The table's header and cells, for printTable. */
export function cloneTable(rows: CloneRow[]): { header: string[]; cells: string[][] } {
  return {
    header: ["CLONE", "HOST", "MEMORY", "FETCHED", "MULTICAST", "AVOIDED zero/free/alloc", "RUNNING", "RESULT"],
    cells: rows.map((r) => [
      r.clone,
      r.host,
      r.memory,
      count(r.fetched),
      count(r.multicast),
      r.knownZero === undefined ? "-" : `${r.knownZero}/${r.freePages}/${r.allocationHints}`,
      `${r.runningMs.toFixed(0)} ms`,
      r.matched ? "ok (= host)" : `WRONG: ${r.line ?? "no line"}`,
    ]),
  };
}
