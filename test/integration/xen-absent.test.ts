/**
 * `snowflock doctor` on a host without Xen, as a user runs it: asking for the Xen backend is one
 * line saying what is missing and a non-zero exit; --json reports both backends. Skipped where a
 * privcmd device (or xenfs's control_d) exists: that is a Xen host.
 */
import { describe, expect, test } from "bun:test";
import { privcmdPath, xenDetected } from "../../src/backend/xen/detect.ts";
import { snowflock } from "../support/cli.ts";

const xen = xenDetected() ? `${privcmdPath() ?? "/proc/xen/capabilities (control_d)"} exists, this host has Xen` : undefined;
if (xen) console.warn(`xen-absent: skipping — ${xen}`);

describe.skipIf(xen !== undefined)(`snowflock doctor without Xen${xen ? ` (skipped: ${xen})` : ""}`, () => {
  test("--backend xen: one line, no Xen hypervisor/privcmd, exit status 1", async () => {
    const r = await snowflock(["doctor", "--backend", "xen"]);
    expect(r.status).toBe(1);
    expect(r.stdout).toBe("");
    const lines = r.stderr.trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      /no Xen hypervisor here: \/dev\/xen\/privcmd is missing|this Linux runs on Xen, but \/dev\/xen\/privcmd is missing/,
    );
  });

  test("--json reports both backends; Xen as unavailable, with the same reason", async () => {
    const r = await snowflock(["doctor", "--json"]);
    expect(r.status).toBe(0);
    const report = JSON.parse(r.stdout) as { backend: string; backends: Record<string, { available: boolean | string; reason?: string }> };
    expect(Object.keys(report.backends).sort()).toEqual(["kvm", "xen"]);
    expect(report.backend).toBe("kvm");
    expect(report.backends.xen!.available).toBe(false);
    expect(report.backends.xen!.reason).toMatch(/\/dev\/xen\/privcmd is missing/);
    expect(typeof report.backends.kvm!.available).toBe("boolean");
    if (!report.backends.kvm!.available) expect(report.backends.kvm!.reason).toBeString();
    // Neither backend here: the report names the nested KVM host's demo as the way to try snowflock.
    if (report.backends.kvm!.available) expect(report).not.toHaveProperty("tryNested");
    else expect(report).toHaveProperty("tryNested", expect.stringContaining("`bun run demo`"));
  });

  test("--backend xen --json: the Xen report alone, exit status 1", async () => {
    const r = await snowflock(["doctor", "--backend", "xen", "--json"]);
    expect(r.status).toBe(1);
    expect(JSON.parse(r.stdout)).toEqual({
      backend: "xen",
      backends: { xen: { available: false, reason: expect.stringMatching(/privcmd is missing/) } },
    });
  });

  test("without --backend: Xen is one line saying why, exit status 0", async () => {
    const r = await snowflock(["doctor"]);
    expect(r.status).toBe(0);
    const xenLines = r.stdout.split("\n").filter((l) => l.startsWith("xen"));
    // Where KVM works, doctor reports KVM in detail and says nothing of Xen; else one line per backend.
    if (xenLines.length > 0) {
      expect(xenLines).toHaveLength(1);
      expect(xenLines[0]).toMatch(/^xen: .*privcmd is missing/);
      expect(r.stdout.split("\n").filter((l) => l.startsWith("kvm: "))).toHaveLength(1);
      // No /dev/kvm either: the last line says how to try snowflock here anyway.
      expect(r.stdout.trim().split("\n").at(-1)).toMatch(/^to try snowflock on this machine anyway: `bun run demo` .* nested KVM host/);
    } else {
      expect(r.stdout).toMatch(/^backend +kvm$/m);
    }
  });

  test("a bad --backend is a usage error", async () => {
    const r = await snowflock(["doctor", "--backend", "hyperv"]);
    expect(r.status).toBe(1);
    expect(r.stderr.trim()).toEndWith("bad --backend 'hyperv' (choose kvm or xen)");
  });
});
