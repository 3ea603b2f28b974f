/**
 * Tests that need /dev/kvm run for real where it works. Without it they skip with one line —
 * unless SNOWFLOCK_REQUIRE_KVM=1 (as in CI), where a missing KVM fails the run instead.
 */
import { describe, test } from "bun:test";
import { kvmAvailable } from "../../src/backend/kvm/host.ts";

const availability = kvmAvailable();
export const KVM_REQUIRED = process.env.SNOWFLOCK_REQUIRE_KVM === "1";

/** describe() for tests that start real VMs. */
export function describeKvm(name: string, body: () => void): void {
  if (availability.ok) return describe(name, body);
  if (KVM_REQUIRED) {
    return describe(name, () => {
      test("KVM is available (SNOWFLOCK_REQUIRE_KVM=1)", () => {
        throw new Error(`KVM is required here but unavailable: ${availability.reason}`);
      });
    });
  }
  console.warn(`skipping "${name}": ${availability.reason}`);
  describe.skip(name, body);
}
