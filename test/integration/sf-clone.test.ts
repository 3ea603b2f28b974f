/** The Impromptu Cluster API from inside the guest: sf_clone families on one host. */
import { expect, test } from "bun:test";
import { countLines, dataset, sha256Hex, sliceLines } from "../../src/guest/dataset.ts";
import { snowflock, testRunDir } from "../support/cli.ts";
import { describeKvm } from "../support/kvm.ts";
import { lean } from "../support/time.ts";

const env = () => ({ SNOWFLOCK_RUN_DIR: testRunDir() });
/** The eight-slice dataset: under emulation a quarter, which still gives each clone two MiB to hash. */
const PAR_BYTES = lean(64 << 20, 16 << 20);
const PAR_SIZE = `size=${PAR_BYTES >> 20}M`;

describeKvm("sf_clone", () => {
  test(`sha256-par ${PAR_SIZE} seed=7 clones=8: every slice digest matches the host`, async () => {
    const r = await snowflock(["run", "sha256-par", PAR_SIZE, "seed=7", "clones=8", "--mem", "256M"], env());
    expect(r.stdout.trim().split("\n")).toEqual([...sliceLines(7n, PAR_BYTES, 8), "granted 8"]);
    expect(r.status).toBe(0);
  });

  test("the same with --memory ondemand: clones fetch pages from the parent's frozen image", async () => {
    const r = await snowflock(
      ["run", "sha256-par", PAR_SIZE, "seed=7", "clones=8", "--mem", "256M", "--memory", "ondemand", "--json"],
      env(),
    );
    expect(r.status).toBe(0);
    const result = JSON.parse(r.stdout);
    expect(result.console).toEqual([...sliceLines(7n, PAR_BYTES, 8), "granted 8"]);
    const guestPages = (256 << 20) / 4096;
    expect(result.stats.clones).toBe(8);
    expect(result.stats.pagesFetched).toBeGreaterThan(0);
    expect(result.stats.pagesFetched).toBeLessThan(guestPages / 2);
    // Every fault was served by a fetch, a zero-fill (which with prefetch fills a run of pages), or
    // a page that came in while it waited; every prefetched page was fetched without a fault.
    const { faults, pagesFetched, pagesPrefetched, pagesZeroFilled } = result.stats;
    expect(faults).toBeGreaterThanOrEqual(pagesFetched - pagesPrefetched);
    expect(faults).toBeLessThanOrEqual(pagesFetched + pagesZeroFilled);
    // On the parent's host the clones read the frozen image themselves: no server sends anything.
    expect(result.stats.bytesReceived).toBe(result.stats.pagesFetched * 4096);
    expect(result.stats.serverBytesSent).toBe(0);
    expect(result.stats.descriptorBytes).toBeGreaterThan(0);
    expect(result.stats.descriptorBytes).toBeLessThan((256 << 20) / 500);
  });

  test("slices of a size that does not divide evenly, on 2 vCPUs", async () => {
    const r = await snowflock(["run", "sha256-par", "size=1000003", "seed=11", "clones=3", "--vcpus", "2", "--mem", "64M"], env());
    expect(r.stdout.trim().split("\n")).toEqual([...sliceLines(11n, 1000003, 3), "granted 3"]);
  });

  test("search-par: each clone's count equals a host-side count over the same bytes", async () => {
    const size = 4 << 20;
    const r = await snowflock(["run", "search-par", `size=${size}`, "seed=9", "clones=4", "--mem", "64M"], env());
    const expected = countLines(9n, size, 4);
    expect(r.stdout.trim().split("\n")).toEqual([...expected, "granted 4"]);
  });

  test("search-par together=1: a clone that ends before it says it runs does not hold its siblings back", async () => {
    const size = 1 << 20;
    // quit=2: clone 2 exits with status 3 at once; the parent's barrier finds it gone and lets 1 and 3 read.
    const r = await snowflock(["run", "search-par", `size=${size}`, "seed=9", "clones=3", "together=1", "quit=2", "--mem", "64M"], env());
    const [one, two, three] = countLines(9n, size, 3);
    expect(r.stdout.trim().split("\n")).toEqual([one!, two!.replace(/ \d+$/, " error status 3"), three!, "granted 3"]);
    expect(r.status).toBe(1);
  });

  test("alloc-par: each clone's freshly allocated and filled memory hashes like the host's, on both memory paths", async () => {
    const size = 4 << 20;
    const expected = [1n, 2n, 3n].map((i) => `alloc ${i} ${sha256Hex(dataset(5n + i, size))}`);
    for (const memory of ["cow", "ondemand"]) {
      const r = await snowflock(
        ["run", "alloc-par", `size=${size}`, "seed=5", "clones=3", "--mem", "64M", "--memory", memory, "--json"],
        env(),
      );
      expect(r.status).toBe(0);
      const result = JSON.parse(r.stdout);
      expect(result.console).toEqual([...expected, "granted 3"]);
      // What the clones allocated was zero in the parent: filled locally, never fetched.
      if (memory === "ondemand") expect(result.stats.pagesZeroFilled).toBeGreaterThanOrEqual(3 * (size / 4096));
    }
  });

  test("the ticket policy may grant fewer clones than asked (--max-clones)", async () => {
    const r = await snowflock(["run", "sha256-par", "size=64K", "seed=1", "clones=5", "--max-clones", "2", "--mem", "32M"], env());
    expect(r.stdout.trim().split("\n")).toEqual([...sliceLines(1n, 65536, 2), "granted 2"]);
  });

  test("checkpoint and misuse scenarios also hold with --memory ondemand", async () => {
    const r = await snowflock(["run", "misuse", "--mem", "32M", "--memory", "ondemand"], env());
    expect(r.stdout).not.toContain("FAIL");
    expect(r.stdout).toContain("misuse checkpoint_messages ok");
    expect(r.status).toBe(0);
  });

  for (const memory of ["cow", "ondemand"]) {
    test(`after sf_clone, the parent's and each clone's writes stay their own (--memory ${memory})`, async () => {
      // The parent writes, then tells clone 1 to look; clone 1 writes, then tells clone 2 to look.
      const r = await snowflock(["run", "isolation", "--mem", "32M", "--memory", memory], env());
      expect(r.status).toBe(0);
      expect(r.stdout.trim().split("\n").sort()).toEqual([
        "isolation clone 1 saw 1000",
        "isolation clone 2 saw 1000",
        "isolation parent sees 3000",
      ]);
    });
  }

  test("each misuse of the API fails with its error and the family goes on", async () => {
    const e = env();
    const r = await snowflock(["run", "misuse", "--mem", "32M"], e);
    expect(r.stdout).not.toContain("FAIL");
    expect(r.stdout).toContain("misuse join_status_killed ok");
    expect(r.stdout).toContain("misuse done");
    expect(r.status).toBe(0);
    // Clone 1 checked its own misuses (join from a clone, bad sends) and logged them.
    const clone = (await snowflock(["logs", "misuse-1.1"], e)).stdout;
    for (const check of ["clone_join", "send_no_member", "send_self", "send_oversized", "send_wild_pointer"])
      expect(clone).toContain(`misuse ${check} ok`);
  });
});
