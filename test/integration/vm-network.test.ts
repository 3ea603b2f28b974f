/**
 * A VM's network device on the host side (net/tap.ts), for real in a network namespace: two VMs'
 * taps on the family's bridge (made on first use) carry a frame from one to the other; a name
 * that is taken by something that is not a bridge is one clear NET error. The guest's side, a
 * stock Linux and its clones pinging each other: linux-net.test.ts.
 */
import { expect, test } from "bun:test";
import { join } from "node:path";
import { describeNetns } from "../support/netns.ts";

describeNetns("VM taps on a family bridge", () => {
  test("two taps on a bridge made on first use carry a frame between them; a name that is no bridge is refused", () => {
    const ns = `sfnet-${process.pid}`;
    const ip = (...args: string[]) => Bun.spawnSync(["ip", "-n", ns, ...args], { stderr: "pipe" });
    expect(Bun.spawnSync(["ip", "netns", "add", ns]).exitCode).toBe(0);
    try {
      expect(ip("link", "add", "sfveth0", "type", "veth", "peer", "name", "sfveth1").exitCode).toBe(0);
      const probe = Bun.spawnSync(
        ["ip", "netns", "exec", ns, process.execPath, join(import.meta.dir, "../support/bridged-taps-probe.ts"), "sffamily0", "sfveth0"],
        { stderr: "pipe" },
      );
      expect(probe.exitCode, probe.stderr.toString()).toBe(0);
      const report = JSON.parse(probe.stdout.toString()) as {
        taps: string[];
        bridges: string[];
        seen: boolean;
        refusal?: { code: string; message: string };
      };
      expect(report.taps).toEqual(["sf0", "sf1"]);
      expect(report.bridges).toEqual(["sffamily0", "sffamily0"]);
      expect(report.seen).toBe(true);
      expect(report.refusal?.code).toBe("NET");
      expect(report.refusal?.message).toBe("sfveth0 is a network interface but not a bridge (name a bridge, or a name not in use)");
      // The taps went with the process; the bridge stays for the family's next VMs.
      const links = ip("-br", "link").stdout.toString();
      expect(links).toContain("sffamily0");
      expect(links).not.toMatch(/^sf0\s/m);
    } finally {
      Bun.spawnSync(["ip", "netns", "del", ns]);
    }
  });
});
