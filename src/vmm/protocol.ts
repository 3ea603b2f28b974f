import type { ForkResult } from "../clone/local-fork.ts";
import type { DescriptorSummary } from "../descriptor/summary.ts";
/**
 * The control protocol of a VMM process: one JSON object per line over its Unix socket.
 * Every request names the protocol version; an unknown version or operation is refused.
 */
export const CONTROL_PROTOCOL_VERSION = 1;
export const MAX_CLONES_PER_FORK = 64;

export type ControlRequest =
  | { v: number; op: "status" }
  | { v: number; op: "kill" }
  /** Pause, write a VM descriptor to `path` (absolute), resume. */
  | { v: number; op: "descriptor"; path: string }
  /** Clone the VM into `clones` new VMs on this host. */
  | { v: number; op: "fork"; clones: number };

export interface VmStatus {
  name: string;
  parent?: string;
  cloneId?: number;
  pid: number;
  workload: string;
  state: "running" | "paused" | "stopping";
  memoryBytes: number;
  vcpus: number;
  uptimeMs: number;
  consoleLines: number;
  /** Guest pages ever written (resident in the memfd), counted with the WASM page bitmap. */
  pagesTouched: number;
}

export type ControlResponse = { ok: true; status?: VmStatus; descriptor?: DescriptorSummary & { pausedMs: number }; fork?: ForkResult } | { ok: false; error: string };

export function parseRequest(line: string): ControlRequest | { error: string } {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return { error: "request is not JSON" };
  }
  if (typeof value !== "object" || value === null) return { error: "request is not an object" };
  const { v, op, path, clones } = value as Record<string, unknown>;
  if (v !== CONTROL_PROTOCOL_VERSION) return { error: `unsupported protocol version ${String(v)} (this VMM speaks ${CONTROL_PROTOCOL_VERSION})` };
  if (op === "status" || op === "kill") return { v, op };
  if (op === "descriptor") {
    if (typeof path !== "string" || !path.startsWith("/")) return { error: "descriptor needs an absolute path" };
    return { v, op, path };
  }
  if (op === "fork") {
    if (typeof clones !== "number" || !Number.isInteger(clones) || clones < 1 || clones > MAX_CLONES_PER_FORK) return { error: `fork needs a clone count from 1 to ${MAX_CLONES_PER_FORK}` };
    return { v, op, clones };
  }
  return { error: `unknown operation ${JSON.stringify(op)}` };
}
