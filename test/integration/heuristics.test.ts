/**
 * Avoidance heuristics: clones that fill what they can themselves fetch far fewer pages, with the
 * same results; each heuristic can be switched off to measure it.
 */
import { expect, test } from "bun:test";
import { dataset, sha256Hex } from "../support/dataset.ts";
import { snowflock, testRunDir } from "../support/cli.ts";
import { describeKvm } from "../support/kvm.ts";

const env = () => ({ SNOWFLOCK_RUN_DIR: testRunDir() });

describeKvm("avoidance heuristics", () => {
  test("alloc-par size=32M clones=4 --memory ondemand: at least 10 x fewer pages fetched than with --no-heuristics, same results", async () => {
    const size = 32 << 20;
    const expected = [1n, 2n, 3n, 4n].map((i) => `alloc ${i} ${sha256Hex(dataset(i, size))}`);
    const run = async (extra: string[]) => {
      const r = await snowflock(["run", "alloc-par", "size=32M", "clones=4", "--memory", "ondemand", "--json", ...extra], env(), 120_000);
      expect(r.stderr).toBe("");
      expect(r.status).toBe(0);
      return JSON.parse(r.stdout) as { console: string[]; stats: { pagesFetched: number; pagesAvoided: Record<string, number> } };
    };
    const all = await run([]);
    const none = await run(["--no-heuristics"]);
    const noFreePages = await run(["--no-heuristic", "free-pages"]);
    for (const result of [all, none, noFreePages]) expect(result.console).toEqual([...expected, "granted 4"]);
    expect(all.stats.pagesFetched * 10).toBeLessThanOrEqual(none.stats.pagesFetched);
    expect(none.stats.pagesAvoided).toEqual({ "known-zero": 0, "free-pages": 0 });
    // The parent filled and freed the memory the clones allocate: only free-pages spares it.
    expect(all.stats.pagesAvoided["free-pages"]).toBeGreaterThanOrEqual(4 * (size / 4096));
    expect(noFreePages.stats.pagesAvoided["free-pages"]).toBe(0);
    expect(all.stats.pagesFetched * 10).toBeLessThanOrEqual(noFreePages.stats.pagesFetched);
  }, 180_000);

  test("an unknown heuristic is refused with the list of known ones", async () => {
    const r = await snowflock(["run", "alloc-par", "size=1M", "clones=1", "--no-heuristic", "psychic"], env());
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("unknown heuristic 'psychic' (the heuristics are: known-zero, free-pages)");
  });
});
