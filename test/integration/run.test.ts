/** `snowflock run` end to end, as a user runs it: real VMs, output checked against the host. */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { dataset, sha256Hex } from "../../src/guest/dataset.ts";
import { snowflock, testRunDir } from "../support/cli.ts";
import { describeKvm } from "../support/kvm.ts";
import { lean } from "../support/time.ts";

const env = { SNOWFLOCK_RUN_DIR: testRunDir() };
/** The largest digest: under emulation a quarter (64 MiB took 43-51 s a run in the nested host). */
const LARGE = lean(64 << 20, 16 << 20);

describeKvm("snowflock run", () => {
  test("hello", async () => {
    const r = await snowflock(["run", "hello"], env);
    expect(r.stdout).toBe("hello from snowflock guest\n");
    expect(r.status).toBe(0);
  });

  const cases: Array<[string, bigint, number, number]> = [
    ["0", 1n, 0, 1],
    ["1", 2n, 1, 1],
    ["7", 3n, 7, 2],
    ["1000", 0n, 1000, 1],
    ["4097", 0xdeadbeefn, 4097, 2],
    ["1M", 42n, 1 << 20, 2],
    ["3000001", 18446744073709551615n, 3000001, 1],
    [`${LARGE >> 20}M`, 42n, LARGE, 1],
    [`${LARGE >> 20}M`, 42n, LARGE, 2],
  ];
  for (const [size, seed, bytes, vcpus] of cases) {
    test(`sha256 size=${size} seed=${seed} on ${vcpus} vCPU(s) matches the host`, async () => {
      const r = await snowflock(["run", "sha256", `size=${size}`, `seed=${seed}`, "--vcpus", String(vcpus)], env);
      expect(r.stdout).toBe(`sha256 ${sha256Hex(dataset(seed, bytes))}\n`);
      expect(r.status).toBe(0);
    });
  }

  test("--json gives one object with the workload, exit status, console and timings", async () => {
    const r = await snowflock(["run", "sha256", "size=4K", "seed=9", "--json", "--mem", "32M"], env);
    expect(r.status).toBe(0);
    const result = JSON.parse(r.stdout);
    expect(result).toMatchObject({
      workload: "sha256",
      exitStatus: 0,
      end: { kind: "exit", status: 0 },
      console: [`sha256 ${sha256Hex(dataset(9n, 4096))}`],
    });
    expect(result.timings.firstConsoleLineMs).toBeGreaterThan(0);
    expect(result.timings.endMs).toBeGreaterThanOrEqual(result.timings.firstConsoleLineMs);
    expect(result.pagesTouched).toBeGreaterThan(0);
  });

  test("a guest that triple-faults is reported with its exit reason", async () => {
    const r = await snowflock(["run", "crash"], env);
    expect(r.stdout).toBe("crashing on purpose\n");
    expect(r.stderr).toContain("guest crashed on vCPU 0: triple fault (KVM_EXIT_SHUTDOWN)");
    expect(r.status).toBe(70);
    // The console log (what `logs` shows, and a clone's only witness) says it too.
    const json = await snowflock(["run", "crash", "--json"], env);
    expect(JSON.parse(json.stdout).console.at(-1)).toStartWith("[snowflock] guest crashed on vCPU 0: triple fault (KVM_EXIT_SHUTDOWN)");
  });

  test("booted by --kernel with a command line of one's own, the built-in guest checks its workload's parameters itself", async () => {
    const kernel = join(import.meta.dir, "../../guest/build/snowflock-guest.elf");
    const cases: Array<[string, string]> = [
      ["serve period=5", "error: bad period=5 (a number from 10 to 60000)"],
      ["sha256-par seed=1 clones=2", "error: sha256-par needs size=<bytes[K|M|G]>"],
      ["search-par size=4K clones=300", "error: bad clones=300 (a number from 1 to 256)"],
    ];
    for (const [cmdline, error] of cases) {
      const r = await snowflock(["run", "--kernel", kernel, "--cmdline", cmdline, "--mem", "32M"], env);
      expect({ cmdline, stdout: r.stdout, status: r.status }).toEqual({ cmdline, stdout: `${error}\n`, status: 2 });
    }
  });

  test("a guest making hypercalls with wild pointers gets errors and the VM goes on", async () => {
    const r = await snowflock(["run", "hostile"], env);
    expect(r.stdout).not.toContain("FAIL");
    expect(r.stdout).toContain("hostile done");
    expect(r.status).toBe(0);
  });
});

describe("snowflock run refuses bad input with one clear line", () => {
  const cases: Array<[string[], string, Record<string, string>?]> = [
    [
      ["run", "bogus"],
      "unknown workload 'bogus' (choose one of: hello, sha256, sha256-par, search-par, alloc-par, " +
        "mem-states, compute, serve, crash, isolation, misuse, hostile, quotas)",
    ],
    [["run", "sha256", "size=12Q"], "bad size '12Q' for workload sha256 (expected a size such as 4096, 64K, 256M or 1G)"],
    [
      ["run", "sha256", "size=1G"],
      "sha256 size=1073741824 needs at least 1032M of guest memory, but the VM has 256M (raise --mem (e.g. --mem 1088M))",
    ],
    [["run", "hello", "--mem", "lots"], "bad --mem 'lots' (give a size such as 256M or 1G)"],
    [["run", "hello", "--mem", "512G"], "--mem 512G is too large (a VM has at most 256G)"],
    [["run", "hello", "--vcpus", "0"], "bad --vcpus '0' (give a whole number from 1 to 64)"],
    [["run", "hello", "--name", "../x"], "bad VM name '../x'"],
    [["run", "hello"], "cannot open /nonexistent/kvm: ENOENT", { SNOWFLOCK_KVM_DEVICE: "/nonexistent/kvm" }],
  ];
  for (const [args, message, extra] of cases) {
    test(args.join(" ") + (extra ? " without /dev/kvm" : ""), async () => {
      const r = await snowflock(args, { ...env, ...extra });
      expect(r.status).not.toBe(0);
      expect(r.stdout).toBe("");
      const lines = r.stderr.trim().split("\n");
      expect(lines).toHaveLength(1);
      expect(lines[0]).toContain(message);
    });
  }
});
