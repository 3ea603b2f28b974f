/**
 * Tests that build test hosts (network namespaces, veth pairs, bridges) run for real where that
 * works: root and a working `ip netns`. Elsewhere they skip with one line — unless
 * SNOWFLOCK_REQUIRE_KVM=1 (as in CI), where the missing capability fails the run instead.
 */
import { describe, test } from "bun:test";

function netnsAvailability(): { ok: true } | { ok: false; reason: string } {
  if (process.platform !== "linux") return { ok: false, reason: "network namespaces need Linux" };
  if (process.getuid?.() !== 0) return { ok: false, reason: "creating network namespaces needs root" };
  const name = `sfcheck-${process.pid}`;
  try {
    const added = Bun.spawnSync(["ip", "netns", "add", name], { stdout: "ignore", stderr: "pipe" });
    if (added.exitCode !== 0) return { ok: false, reason: `\`ip netns add\` fails: ${added.stderr.toString().trim()}` };
    const veth = Bun.spawnSync(["ip", "-n", name, "link", "add", "sfcheck0", "type", "veth", "peer", "name", "sfcheck1"], {
      stdout: "ignore",
      stderr: "pipe",
    });
    if (veth.exitCode !== 0) return { ok: false, reason: `cannot create veth pairs: ${veth.stderr.toString().trim()}` };
    const bridge = Bun.spawnSync(["ip", "-n", name, "link", "add", "sfcheckbr", "type", "bridge"], { stdout: "ignore", stderr: "pipe" });
    if (bridge.exitCode !== 0) return { ok: false, reason: `cannot create bridges: ${bridge.stderr.toString().trim()}` };
    return { ok: true };
  } catch (error) {
    return { ok: false, reason: `cannot run ip (iproute2): ${(error as Error).message}` };
  } finally {
    Bun.spawnSync(["ip", "netns", "del", name], { stdout: "ignore", stderr: "ignore" });
  }
}

const availability = netnsAvailability();
export const NETNS_REQUIRED = process.env.SNOWFLOCK_REQUIRE_KVM === "1";

/** describe() for tests that create network namespaces. */
export function describeNetns(name: string, body: () => void): void {
  if (availability.ok) return describe(name, body);
  const reason = availability.reason;
  if (NETNS_REQUIRED) {
    return describe(name, () => {
      test("network namespaces are available (SNOWFLOCK_REQUIRE_KVM=1)", () => {
        throw new Error(`network namespaces are required here but unavailable: ${reason}`);
      });
    });
  }
  console.warn(`skipping "${name}": ${reason}`);
  describe.skip(name, body);
}
