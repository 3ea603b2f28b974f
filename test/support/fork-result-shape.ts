/** The shape `snowflock fork --json` prints on every backend (README, "fork --json"), checked field by field. */
import { expect } from "bun:test";
import type { ForkResult } from "../../src/clone/fork-result.ts";

export function expectForkResult(result: ForkResult, backend: ForkResult["backend"]): void {
  expect(result.backend).toBe(backend);
  expect(typeof result.parent).toBe("string");
  expect(backend === "xen" ? ["eager", "ondemand"] : ["cow", "ondemand"]).toContain(result.memory);
  for (const field of ["pausedMs", "descriptorMs", "descriptorBytes", "totalMs"] as const) expect(result[field]).toBeGreaterThanOrEqual(0);
  expect(result.pausedMs).toBeGreaterThan(0);
  expect(result.totalMs).toBeGreaterThanOrEqual(result.pausedMs);
  expect(Array.isArray(result.failed)).toBe(true);
  for (const clone of result.clones) {
    expect(clone.name).toBe(`${result.parent}.${clone.cloneId}`);
    for (const field of ["readyMs", "restoredMs", "runningMs"] as const) expect(clone[field]).toBeGreaterThanOrEqual(0);
    // The clone's own process on KVM, its domain (and MAC) on Xen.
    if (backend === "kvm") expect(clone.pid).toBeGreaterThan(0);
    else {
      expect(clone.domid).toBeGreaterThan(0);
      expect(clone.mac).toMatch(/^00:16:3e:[0-9a-f]{2}:[0-9a-f]{2}:[0-9a-f]{2}$/);
    }
  }
  // What the memory cost: the copy where it was eager (Xen), the shells and image where it was on demand (Xen).
  expect((result.eagerCopy !== undefined) === (backend === "xen" && result.memory === "eager")).toBe(true);
  expect((result.onDemand !== undefined) === (backend === "xen" && result.memory === "ondemand")).toBe(true);
}
