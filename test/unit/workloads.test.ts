import { describe, expect, test } from "bun:test";
import { SnowflockError } from "../../src/errors.ts";
import { checkMemory, KERNEL_RESERVE, parseWorkload } from "../../src/guest/workloads.ts";
import { parseSize } from "../../src/size.ts";

function errorOf(work: () => unknown): SnowflockError {
  try {
    work();
  } catch (error) {
    if (error instanceof SnowflockError) return error;
    throw error;
  }
  throw new Error("expected a SnowflockError");
}

describe("sizes", () => {
  test("binary suffixes", () => {
    expect(parseSize("4096")).toBe(4096);
    expect(parseSize("64K")).toBe(65536);
    expect(parseSize("64M")).toBe(64 * 2 ** 20);
    expect(parseSize("1g")).toBe(2 ** 30);
    expect(parseSize("2GiB")).toBe(2 ** 31);
  });
  test("not sizes", () => {
    for (const bad of ["", "M", "-1", "1.5M", "12Q", "0x10", "99999999999999999999"]) expect(parseSize(bad)).toBeUndefined();
  });
});

describe("workload requests", () => {
  test("sha256 builds the guest command line and its memory need", () => {
    const r = parseWorkload("sha256", ["size=64M", "seed=42"]);
    expect(r.cmdline).toBe(`sha256 size=${64 * 2 ** 20} seed=42`);
    expect(r.minimumMemory).toBe(KERNEL_RESERVE + 64 * 2 ** 20);
  });

  test("an unknown workload names the known ones", () => {
    const e = errorOf(() => parseWorkload("bogus", []));
    expect(e.code).toBe("WORKLOAD");
    expect(e.render()).toBe(
      "unknown workload 'bogus' (choose one of: hello, sha256, sha256-par, search-par, alloc-par, " +
        "mem-states, compute, serve, crash, isolation, misuse, hostile, quotas)",
    );
  });

  test("a bad size is one clear line", () => {
    expect(errorOf(() => parseWorkload("sha256", ["size=12Q"])).render()).toBe(
      "bad size '12Q' for workload sha256 (expected a size such as 4096, 64K, 256M or 1G)",
    );
  });

  test("missing and unknown parameters", () => {
    expect(errorOf(() => parseWorkload("sha256", [])).message).toBe("workload sha256 needs size=…");
    expect(errorOf(() => parseWorkload("hello", ["x=1"])).render()).toBe("workload hello does not take 'x=1' (it takes no parameters)");
    expect(errorOf(() => parseWorkload("sha256", ["size=1K", "seed=-3"])).code).toBe("WORKLOAD");
    expect(errorOf(() => parseWorkload("sha256", ["size=1K", `seed=${1n << 64n}`])).code).toBe("WORKLOAD");
  });

  test("search-par's together is 0 or 1, and only search-par takes it", () => {
    expect(parseWorkload("search-par", ["size=1M", "clones=2", "together=1"]).cmdline).toBe(
      `search-par size=${2 ** 20} clones=2 together=1`,
    );
    expect(errorOf(() => parseWorkload("search-par", ["size=1M", "clones=2", "together=2"])).render()).toBe(
      "bad together '2' for workload search-par (expected a whole number from 0 to 1)",
    );
    expect(errorOf(() => parseWorkload("sha256-par", ["size=1M", "clones=2", "together=1"])).code).toBe("WORKLOAD");
    expect(parseWorkload("search-par", ["size=1M", "clones=2", "quit=2"]).cmdline).toBe(`search-par size=${2 ** 20} clones=2 quit=2`);
    expect(errorOf(() => parseWorkload("search-par", ["size=1M", "clones=2", "quit=0"])).code).toBe("WORKLOAD");
  });

  test("too little memory for the dataset", () => {
    const r = parseWorkload("sha256", ["size=1G"]);
    const e = errorOf(() => checkMemory(r, 256 * 2 ** 20));
    expect(e.message).toContain("needs at least");
    expect(e.message).toContain("the VM has 256M");
    expect(() => checkMemory(r, 2 * 2 ** 30)).not.toThrow();
  });
});
