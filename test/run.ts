/**
 * The test command (`bun run test`). Where /dev/kvm works it is `bun test`. Where it does not but
 * KVM tests must run (SNOWFLOCK_REQUIRE_KVM=1, as in CI, or SNOWFLOCK_NESTED_KVM=1), the files
 * with KVM tests run inside the nested KVM host (test/nested: a Linux VM under QEMU's software
 * emulation whose kvm-amd gives a real /dev/kvm) and the rest here; one summary at the end.
 * Where /dev/kvm is PVM (kvm_pvm, see below) only the stock Linux guests' files (and NESTED_TOO)
 * go to the nested host; the built-in guest's run here on PVM.
 *
 * The nested host gets one vCPU: with two, 2-vCPU guests inside it were seen to hang.
 * Under emulation a VM runs 10-50 times slower, so the tests' time limits scale
 * (SNOWFLOCK_TEST_TIME_SCALE) and so do snowflock's own waits (SNOWFLOCK_TIMEOUT_SCALE),
 * and tests shrink their data (test/support/time.ts). Without any /dev/kvm, the multi-host
 * cluster files, the soak and the demo, which start dozens of VMs on several test hosts, run in a
 * second nested KVM host beside the first (lines prefixed "cluster| "; the first's "kvm| "), which
 * boots while the files that need no KVM run here.
 *
 * In CI (SNOWFLOCK_REQUIRE_KVM=1), or with SNOWFLOCK_XEN_STAGE=1, the Xen stage runs too
 * (`bun run test:xen`: test/xen/ in the nested Xen host), unless this is a Xen dom0 itself,
 * where `bun test` has run test/xen/ already. Where the KVM tests run in nested KVM hosts, its
 * stock-Xen half starts once the second of them has ended (with PVM, once the files here have)
 * and its paging runs (one host, then the two-host cluster test) once all KVM tests have
 * (lines prefixed "xen| "): clones with memory on demand fell behind their time limits when three
 * emulators shared two cores.
 */
import { Glob } from "bun";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { kvmAvailable } from "../src/backend/kvm/host.ts";
import { kvmIsPvm, PVM_TOO_SLOW } from "./support/pvm.ts";

const ROOT = join(import.meta.dir, "..");
const BUN_TIMEOUT = ["--timeout", "120000"];
const NESTED_TIME_SCALE = "10";
/** Lines of each failed test's error repeated in the summary at the end. */
const ERROR_LINES = 12;
/** Files for the second nested KVM host (see above). */
const SECOND_NESTED_HOST = [
  "test/integration/cluster.test.ts",
  "test/integration/cluster-acceptance.test.ts",
  "test/integration/cluster-faults.test.ts",
  "test/integration/soak.test.ts",
  "test/integration/demo.test.ts",
  "test/integration/pool-fork.test.ts",
  "test/integration/overhead.test.ts",
];

interface Outcome {
  status: number;
  passed: number;
  failed: number;
  /** bun's "(fail) ..." lines, once each. */
  failures: string[];
}

/**
 * Runs a command with its output passed through (whole lines behind `prefix`, when given, so a
 * stage running beside another stays readable), and reads bun's " N pass" / " N fail" lines.
 */
async function run(command: string[], env: Record<string, string> = {}, prefix = ""): Promise<Outcome> {
  console.log(`${prefix}+ ${command.join(" ")}`);
  const child = Bun.spawn(command, { cwd: ROOT, env: { ...process.env, ...env }, stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  let text = "";
  const pump = async (stream: ReadableStream<Uint8Array>, out: NodeJS.WriteStream) => {
    const decoder = new TextDecoder();
    let pending = "";
    for await (const chunk of stream) {
      const part = decoder.decode(chunk, { stream: true });
      text += part;
      if (!prefix) {
        out.write(part);
        continue;
      }
      pending += part;
      const end = pending.lastIndexOf("\n");
      if (end < 0) continue;
      out.write(
        pending
          .slice(0, end + 1)
          .replace(/^/gm, prefix)
          .slice(0, -prefix.length),
      );
      pending = pending.slice(end + 1);
    }
    if (pending) out.write(`${prefix}${pending}\n`);
  };
  await Promise.all([pump(child.stdout, process.stdout), pump(child.stderr, process.stderr)]);
  const status = await child.exited;
  const count = (word: string) =>
    Number(
      text
        .match(new RegExp(`^ *(\\d+) ${word}$`, "gm"))
        ?.at(-1)
        ?.trim()
        .split(" ")[0] ?? 0,
    );
  return { status, passed: count("pass"), failed: count("fail"), failures: failuresWithErrors(text).map((f) => f.replace(/^/gm, prefix)) };
}

/**
 * bun's "(fail) ..." lines, once each, each after the error bun printed before it (at most
 * ERROR_LINES lines of it): the summary at the end is often all of a long run's output one sees.
 */
function failuresWithErrors(text: string): string[] {
  // A stage in a nested host prints its lines behind its own "xen| ".
  const lines = text.split("\n").map((line) => line.replace(/^[\w-]+\| /, ""));
  const seen = new Set<string>();
  const failures: string[] = [];
  lines.forEach((line, i) => {
    if (!line.startsWith("(fail) ") || seen.has(line)) return;
    seen.add(line);
    let start = i;
    while (start > Math.max(0, i - 60) && !/^(error|\S*Error)\b/.test(lines[start - 1]!) && !lines[start - 1]!.startsWith("(")) start--;
    const error =
      start > 0 && /^(error|\S*Error)\b/.test(lines[start - 1]!) ? lines.slice(start - 1, i).filter((l) => l.trim() !== "") : [];
    failures.push([...error.slice(0, ERROR_LINES).map((l) => `    ${l}`), line].join("\n"));
  });
  return failures;
}

/** Every test file's text, by path. */
const sources = new Map(
  [...new Glob("test/**/*.test.ts").scanSync({ cwd: ROOT })].sort().map((file) => [file, readFileSync(join(ROOT, file), "utf8")]),
);
const needsKvm = (file: string) => sources.get(file)!.includes("describeKvm(");
const usesLinuxAssets = (file: string) => sources.get(file)!.includes("support/linux-guest.ts");

const args = process.argv.slice(2);
const files = [...sources.keys()].filter((f) => args.length === 0 || args.some((a) => f.includes(a)));
/**
 * On PVM (support/pvm.ts), where the KVM tests must run (CI), the stock Linux guests' files go to the nested
 * KVM host as without KVM, the built-in guest's run here on PVM (minutes instead of most of an hour
 * under emulation), and NESTED_TOO run in the nested host as well: there on a KVM with hardware
 * virtualization (kvm-amd), which is what users have.
 */
const pvm = kvmIsPvm();
const kvm = kvmAvailable();
const onPvm = pvm && kvm.ok;
const nested = (!kvm.ok || pvm) && (process.env.SNOWFLOCK_REQUIRE_KVM === "1" || process.env.SNOWFLOCK_NESTED_KVM === "1");
/**
 * With PVM: built-in guest files that run in the nested host too (forks on both memory paths); the
 * stock Linux guests' files there run sf clone on both too. More here lengthened the Xen stage
 * beside it (sf-clone.test.ts: 5.5 minutes).
 */
const NESTED_TOO = ["test/integration/fork.test.ts"];
// The Xen backend's tests need a Xen dom0: in CI (and on request) they run in the nested Xen host.
const xenStage =
  args.length === 0 &&
  !existsSync("/dev/xen/privcmd") &&
  (process.env.SNOWFLOCK_REQUIRE_KVM === "1" || process.env.SNOWFLOCK_XEN_STAGE === "1");
const outcomes: Outcome[] = [];
/** The summary of every part (the failed tests again, as the stages' output runs to thousands of lines), and the exit status. */
function finish(): never {
  const passed = outcomes.reduce((n, o) => n + o.passed, 0);
  const failed = outcomes.reduce((n, o) => n + o.failed, 0);
  const failures = outcomes.flatMap((o) => o.failures);
  if (failures.length > 0) console.log(`\nfailed:\n${failures.join("\n")}`);
  console.log(`\n ${passed} pass\n ${failed} fail`);
  process.exit(outcomes.some((o) => o.status !== 0) ? 1 : 0);
}
// The Linux guest tests boot Debian's kernel with a busybox initramfs: their assets come from
// Debian's packages (a download the first time, as root), into the repository the nested hosts
// share. Only where KVM tests run for real (here or nested); elsewhere those tests skip.
if (((kvm.ok && !pvm) || nested) && files.some(usesLinuxAssets) && process.getuid?.() === 0) {
  const assets = await run(["bash", "test/linux/build-assets.sh"]);
  if (assets.status !== 0) outcomes.push({ ...assets, failed: assets.failed + 1, failures: ["(fail) test/linux/build-assets.sh"] });
}
// After native KVM tests (minutes) the nested Xen host runs on its own.
if (!nested) {
  outcomes.push(await run(["bun", "test", ...BUN_TIMEOUT, ...args]));
  if (xenStage) outcomes.push(await run(["bun", "run", "test:xen"]));
  finish();
}

/** A file for the nested KVM hosts: with PVM only the stock Linux guests' (and NESTED_TOO); without KVM every file with KVM tests. */
const forNestedHost = (f: string) => needsKvm(f) && (!onPvm || usesLinuxAssets(f) || NESTED_TOO.includes(f));
const nestedFiles = files.filter(forNestedHost);
const here = files.filter((f) => !forNestedHost(f) || (onPvm && NESTED_TOO.includes(f)));
// With PVM the cluster files run here: no second host.
const second = onPvm ? [] : nestedFiles.filter((f) => SECOND_NESTED_HOST.includes(f));
const first = nestedFiles.filter((f) => !second.includes(f));
console.log(
  onPvm
    ? `test: ${PVM_TOO_SLOW}: ${first.length} files run in the nested KVM host (test/nested), the built-in guest's here`
    : `test: no usable /dev/kvm here (${kvm.ok ? "" : kvm.reason}): ${nestedFiles.length} files with KVM tests run in nested KVM hosts (test/nested)`,
);
/** `bun test` on `testFiles` in a nested KVM host of its own (lock slot, memory). */
const inNestedHost = (testFiles: string[], slot: number, memory: string, prefix = "") =>
  run(
    [
      "bash",
      "test/nested/run.sh",
      "--",
      "bun",
      "test",
      "--timeout",
      String(120_000 * Number(NESTED_TIME_SCALE)),
      ...testFiles.map((f) => `./${f}`),
    ],
    {
      SNOWFLOCK_TEST_TIME_SCALE: NESTED_TIME_SCALE,
      SNOWFLOCK_TIMEOUT_SCALE: NESTED_TIME_SCALE,
      SNOWFLOCK_NESTED_SMP: process.env.SNOWFLOCK_NESTED_SMP ?? "1",
      SNOWFLOCK_NESTED_SLOT: String(slot),
      SNOWFLOCK_NESTED_MEM: process.env.SNOWFLOCK_NESTED_MEM ?? memory,
      // The whole host's limit, boot included: the first host's files (the Linux guests' among them)
      // take close to run.sh's default of 3000 s, and went past it in a run that shared the cores.
      SNOWFLOCK_NESTED_TIMEOUT: process.env.SNOWFLOCK_NESTED_TIMEOUT ?? "4800",
    },
    prefix,
  );
// The nested KVM hosts side by side (each keeps one core busy); the nested Xen host (two threads)
// on stock Xen once the second, shorter one has ended (with PVM: once the files here have), then
// on the paging hypervisor once all have: three emulators on two cores slowed clones with memory
// on demand past their limits. Its stages beside the first host all the way (the cluster host's
// soak, demo, pool and overhead files moved there to make room) took longer, not shorter: the
// stock half 1,713 s against 1,144 s, the whole run 70 min against 68 (the Xen host's two vCPUs
// lose their turns on cores an emulator beside them holds).
// The nested KVM host is built (apt, debootstrap; both hosts' run.sh find it ready) while the files
// here run. Then the Xen host is built beside the emulators at the lowest priority, on what they
// leave of the cores: from nothing its build (Xen compiled with paging) took 7 of CI's minutes
// between the second host's end and the Xen stage; built beside them, 4.4 minutes of it were left
// then (the emulators leave it little). Its stage's own build-host.sh waits for it, then finds it
// built; a failure shows there again.
const nestedHostBuilt = nestedFiles.length > 0 ? run(["bash", "test/nested/build-host.sh"], {}, "kvm| ") : Promise.resolve();
const xenHostBuilt = xenStage
  ? nestedHostBuilt.then(() => run(["nice", "-n", "19", "bash", "test/xen/build-host.sh"], {}, "xen| "))
  : undefined;
const secondOutcome = second.length > 0 ? nestedHostBuilt.then(() => inNestedHost(second, 1, "6G", "cluster| ")) : undefined;
// The first host boots while the files here run.
const firstOutcome = first.length > 0 ? nestedHostBuilt.then(() => inNestedHost(first, 0, "8G", "kvm| ")) : undefined;
const hereOutcome = here.length > 0 ? run(["bun", "test", ...BUN_TIMEOUT, ...here.map((f) => `./${f}`)]) : undefined;
const stockXenOutcome = xenStage
  ? ((second.length > 0 ? secondOutcome : hereOutcome) ?? Promise.resolve()).then(() => run(["bun", "run", "test:xen:stock"], {}, "xen| "))
  : undefined;
for (const outcome of [hereOutcome, firstOutcome, secondOutcome]) if (outcome) outcomes.push(await outcome);
await xenHostBuilt;
if (stockXenOutcome) {
  outcomes.push(await stockXenOutcome);
  outcomes.push(await run(["bun", "run", "test:xen:paging"], {}, "xen| "));
  outcomes.push(await run(["bun", "run", "test:xen:paging-cluster"], {}, "xen| "));
}
finish();
