/**
 * `snowflock doctor [--backend kvm|xen] [--json]`: what this host offers each backend, and why
 * not where it offers nothing. Without --backend it reports the detected backend (xen in a Xen
 * dom0, else kvm), or one line per backend when neither works, and exits 0; a backend asked for
 * by name that is absent is that backend's one-line error and exit status 1. --json reports both
 * backends (or the one asked for). Where neither works it names the way to try snowflock here
 * anyway: the demo in the nested KVM host.
 */
import type { CAC } from "cac";
import { BACKENDS, type BackendName, type DoctorLine, type DoctorReport } from "../backend/backend.ts";
import { detectedBackend, loadBackend, parseBackend } from "../backend/select.ts";
import { printJson, printLine } from "../output.ts";
import type { PoolState } from "../pool/keeper.ts";
import { poolRequest } from "../pool/keeper-protocol.ts";
import { runDir } from "../run-dir.ts";
import { describeVmmPool } from "./pool.ts";

async function report(name: BackendName): Promise<DoctorReport> {
  return (await loadBackend(name)).doctor();
}

/** This host's pool of ready VMMs (KVM), asked of its keeper; null without one. */
async function vmmPool(): Promise<PoolState | null> {
  return (await poolRequest(runDir(), { op: "status" }).catch(() => undefined)) ?? null;
}

function printFields(fields: DoctorLine[]): void {
  const width = Math.max(...fields.map(([k]) => k.length));
  for (const [k, v] of fields) printLine(`${k.padEnd(width)}  ${v}`);
}

/** For JSON: what the backend offers, or why not (without the error object). */
function plain(r: DoctorReport): Record<string, unknown> {
  return r.available
    ? { backend: r.backend, available: true, ...r.facts, memoryOnDemand: r.memoryOnDemand }
    : { available: false, reason: r.reason };
}

/** Where neither backend works: how to see snowflock run on this machine anyway. */
export const NESTED_DEMO_HINT =
  "to try snowflock on this machine anyway: `bun run demo` in snowflock's repository runs its demo " +
  "inside the nested KVM host (a VM under QEMU's software emulation whose kvm-amd gives a real " +
  "/dev/kvm; 10-50x slower; test/nested/README.md)";

export function registerDoctor(cli: CAC): void {
  cli
    .command("doctor", "Check what this host offers each backend (KVM, Xen)")
    .option("--json", "Print a JSON object")
    .action(async (options: { backend?: string; json?: boolean }) => {
      const asked = parseBackend(options.backend);
      if (asked !== undefined) {
        const backend = asked;
        const r = await report(backend);
        const pool = backend === "kvm" ? await vmmPool() : undefined;
        if (options.json) {
          printJson({ backend, backends: { [backend]: plain(r) }, ...(pool === undefined ? {} : { pool }) });
          return r.available ? 0 : 1;
        }
        if (!r.available) throw r.error;
        printFields(pool === undefined ? r.lines : [...r.lines, ["pool", describeVmmPool(pool ?? undefined)]]);
        return 0;
      }

      const detected = await detectedBackend();
      const reports = { kvm: await report("kvm"), xen: await report("xen") };
      const none = !reports.kvm.available && !reports.xen.available;
      const pool = detected === "kvm" ? await vmmPool() : undefined;
      if (options.json) {
        printJson({
          backend: detected,
          backends: { kvm: plain(reports.kvm), xen: plain(reports.xen) },
          ...(pool === undefined ? {} : { pool }),
          ...(none ? { tryNested: NESTED_DEMO_HINT } : {}),
        });
        return 0;
      }
      const chosen = reports[detected];
      if (chosen.available)
        printFields(pool === undefined ? chosen.lines : [...chosen.lines, ["pool", describeVmmPool(pool ?? undefined)]]);
      else
        for (const b of BACKENDS)
          printLine(`${b}: ${reports[b].available ? `available (snowflock doctor --backend ${b})` : reports[b].reason}`);
      if (none) printLine(NESTED_DEMO_HINT);
      return 0;
    });
}
