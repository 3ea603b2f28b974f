/**
 * The Impromptu Cluster API inside a stock Linux on KVM: the guest's own job script calls the `sf`
 * tool (guest/linux/sf.c, the same tool as in Xen domUs), which speaks the hypercall ABI from user
 * space. The parent generates a seeded dataset in RAM, `sf clone 4` forks it, each clone hashes its
 * quarter and hands the digest to `sf exit`, and the parent's `sf join` prints the four, which must
 * equal the host's. With copy-on-write memory and with memory on demand (clones fetch a small part
 * of the guest's pages); messages between members go through sf send / sf recv. And the
 * heuristics without a patched kernel: an alloc-then-free job's clone fetches far fewer pages.
 */
import { expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { describeKvm, KVM_REQUIRED } from "../support/kvm.ts";
import { jobLines, jobStory, linuxAssetsMissing, runLinuxJob } from "../support/linux-guest.ts";
import { lean, within } from "../support/time.ts";
import { dataset } from "../../src/guest/dataset.ts";

const missing = linuxAssetsMissing();
const SEED = 7;
const BYTES = lean(64 << 20, 16 << 20);
const MEMORY = 256 << 20;
const QUARTER_MIB = BYTES / 4 / 1048576;

/**
 * The job: the parent waits for a "ready-<id>" message from each clone, answers each "go", then
 * joins; each clone hashes its quarter, reports ready, waits for "go" and exits with its digest.
 */
const JOB = `echo "job: dataset $(dataset ${SEED} ${BYTES} > /data && echo ready)"
id=$(sf clone 4)
echo "job: sf clone gave $id; sf id says $(sf id)"
if [ "$id" = 0 ]; then
  for n in 1 2 3 4; do echo "job: got $(sf recv)"; done
  for c in 1 2 3 4; do sf send $c go; done
  echo "job: join $(sf join)"
  echo "job: nothing left to receive: $(sf recv --nowait 2>&1)"
  poweroff -f
else
  digest=$(dd if=/data bs=1048576 skip=$(((id - 1) * ${QUARTER_MIB})) count=${QUARTER_MIB} 2>/dev/null | sha256sum)
  sf send 0 "ready-$id"
  [ "$(sf recv)" = "0 go" ] && sf exit 0 "\${digest%% *}"
  sf exit 1
fi
`;

/**
 * Alloc-then-free: the parent fills ALLOC bytes of page cache and frees them; its clone then fills
 * ALLOC bytes of its own and exits with their digest. sf clone holds the guest's free memory at
 * the clone instant (sf.c): the freed pages are zero in the frozen image, so the clone's new pages
 * need not be fetched (known-zero), unlike with --no-heuristics. One clone: the ratio is per clone,
 * and each page fetched without the heuristics costs time under emulation.
 */
const ALLOC = 160 << 20;
const ALLOC_JOB = `dataset 9 ${ALLOC} > /data && rm /data
id=$(sf clone 1)
if [ "$id" = 0 ]; then
  echo "job: join $(sf join)"
  poweroff -f
else
  dataset 10 ${ALLOC} > /data
  digest=$(sha256sum /data)
  sf exit 0 "\${digest%% *}"
fi
`;

/** Two vCPUs: both online in the parent and in each clone (memory on demand faults from both). */
const SMP_JOB = `echo "job: cpus $(nproc) online $(cat /sys/devices/system/cpu/online)"
dataset ${SEED} ${BYTES} > /data
id=$(sf clone 2)
if [ "$id" = 0 ]; then
  echo "job: join $(sf join)"
  poweroff -f
else
  digest=$(sha256sum /data)
  [ "$(cat /sys/devices/system/cpu/online)" = 0-1 ] && sf exit 0 "\${digest%% *}"
  sf exit 1
fi
`;

describeKvm("sf inside a stock Linux on KVM: the job script's own sf clone 4", () => {
  if (missing && !KVM_REQUIRED) {
    test.skip(`skipped: ${missing}`, () => {});
    return;
  }
  const data = dataset(BigInt(SEED), BYTES);
  const digests = [0, 1, 2, 3].map((i) =>
    createHash("sha256")
      .update(data.subarray((i * BYTES) / 4, ((i + 1) * BYTES) / 4))
      .digest("hex"),
  );

  for (const memory of ["cow", "ondemand"] as const) {
    test(
      `--memory ${memory}: four distinct clone IDs, each clone's digest of its quarter reaches the parent's sf join and equals the host's`,
      async () => {
        const result = await runLinuxJob(JOB, ["--memory", memory]);
        const job = jobLines(result);
        expect(job[0]).toBe("job: dataset ready");
        expect(job[1]).toBe("job: sf clone gave 0; sf id says 0");
        expect(job.slice(2, 6).sort()).toEqual(["job: got 1 ready-1", "job: got 2 ready-2", "job: got 3 ready-3", "job: got 4 ready-4"]);
        expect(job[6]).toBe(`job: join 4 ${digests.map((d, i) => `${i + 1}=0:${d}`).join(" ")}`);
        expect(job[7]).toBe("job: nothing left to receive: sf: refused: no message");
        const guestPages = MEMORY / 4096;
        console.log(`--memory ${memory}: the clones fetched ${result.stats.pagesFetched} pages (the guest has ${guestPages})`);
        if (memory === "ondemand") {
          expect(result.stats.pagesFetched).toBeGreaterThan(0);
          // Each clone touches its kernel, its shell and a quarter of the dataset: far below its pages.
          expect(result.stats.pagesFetched).toBeLessThan((4 * guestPages) / 4);
        }
      },
      within(300_000),
    );
  }

  test(
    "--vcpus 2 --memory ondemand: both CPUs online in the parent and its two clones; each clone's digest of the dataset equals the host's",
    async () => {
      const whole = createHash("sha256").update(data).digest("hex");
      const result = await runLinuxJob(SMP_JOB, ["--memory", "ondemand", "--vcpus", "2"]);
      expect(jobLines(result)).toEqual(["job: cpus 2 online 0-1", `job: join 2 1=0:${whole} 2=0:${whole}`]);
    },
    within(300_000),
  );

  test(
    "alloc-then-free with --memory ondemand: the clone fetches at least 10 x fewer pages than with --no-heuristics (sf clone holds the free memory), same result",
    async () => {
      const expected = `job: join 1 1=0:${createHash("sha256").update(dataset(10n, ALLOC)).digest("hex")}`;
      const on = await runLinuxJob(ALLOC_JOB, ["--memory", "ondemand"], "512M", 600_000);
      const off = await runLinuxJob(ALLOC_JOB, ["--memory", "ondemand", "--no-heuristics"], "512M", 900_000);
      // Without its job line, the console says how the job went instead.
      expect(jobLines(on), `with the heuristics:\n${jobStory(on)}`).toEqual([expected]);
      expect(jobLines(off), `without the heuristics:\n${jobStory(off)}`).toEqual([expected]);
      console.log(
        `alloc-then-free, ${ALLOC >> 20} MiB: ${on.stats.pagesFetched} pages fetched with the heuristics ` +
          `(${JSON.stringify(on.stats.pagesAvoided)} avoided), ${off.stats.pagesFetched} without`,
      );
      expect(on.stats.pagesAvoided["known-zero"]).toBeGreaterThanOrEqual(ALLOC / 4096 / 2);
      expect(on.stats.pagesFetched * 10).toBeLessThanOrEqual(off.stats.pagesFetched);
    },
    within(1_500_000),
  );
});
