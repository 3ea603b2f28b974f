/**
 * The Impromptu Cluster API inside a stock Linux on KVM: the guest's own job script calls the `sf`
 * tool (guest/linux/sf.c, the same tool as in Xen domUs), which speaks the hypercall ABI from user
 * space. The parent generates a seeded dataset in RAM, `sf clone 4` forks it, each clone hashes its
 * quarter and hands the digest to `sf exit`, and the parent's `sf join` prints the four, which must
 * equal the host's; messages between members go through sf send / sf recv. (With memory on
 * demand the same job ran in a probe; run after this one in the same nested host it did not
 * finish: not here yet.)
 */
import { expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { snowflock, testRunDir } from "../support/cli.ts";
import { describeKvm, KVM_REQUIRED } from "../support/kvm.ts";
import { linuxAssetsMissing, stockKernelPath, writeBusyboxInitramfs } from "../support/linux-guest.ts";
import { lean, within } from "../support/time.ts";
import { dataset } from "../../src/guest/dataset.ts";

const missing = linuxAssetsMissing();
const SEED = 7;
const BYTES = lean(64 << 20, 16 << 20);
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

interface RunResult {
  console: string[];
}

/** `snowflock run --kernel` of a job initramfs in the foreground; its --json result. */
async function runJob(job: string, extra: string[]): Promise<RunResult> {
  if (missing) throw new Error(missing);
  const runDir = testRunDir();
  const initrd = writeBusyboxInitramfs(runDir, job, { tools: true });
  const r = await snowflock(
    ["run", "--kernel", stockKernelPath(), "--initrd", initrd, "--mem", "256M", "--name", "job", "--json", ...extra],
    { SNOWFLOCK_RUN_DIR: runDir },
    within(240_000),
  );
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as RunResult;
}

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

  test(
    "--memory cow: four distinct clone IDs, each clone's digest of its quarter reaches the parent's sf join and equals the host's",
    async () => {
      const result = await runJob(JOB, ["--memory", "cow"]);
      const job = result.console.filter((l) => l.startsWith("job: "));
      expect(job[0]).toBe("job: dataset ready");
      expect(job[1]).toBe("job: sf clone gave 0; sf id says 0");
      expect(job.slice(2, 6).sort()).toEqual(["job: got 1 ready-1", "job: got 2 ready-2", "job: got 3 ready-3", "job: got 4 ready-4"]);
      expect(job[6]).toBe(`job: join 4 ${digests.map((d, i) => `${i + 1}=0:${d}`).join(" ")}`);
      expect(job[7]).toBe("job: nothing left to receive: sf: refused: no message");
    },
    within(300_000),
  );
});
