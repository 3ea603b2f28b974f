import type { DescriptorSummary } from "../descriptor/summary.ts";
/**
 * The control protocol of a VMM process: one JSON object per line over its Unix socket.
 * Every request names the protocol version; an unknown version or operation is refused.
 */
export const CONTROL_PROTOCOL_VERSION = 1;

export type ControlRequest =
  | { v: number; op: "status" }
  | { v: number; op: "kill" }
  /** Pause, write a VM descriptor to `path` (absolute), resume. */
  | { v: number; op: "descriptor"; path: string };

export interface VmStatus {
  name: string;
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

export type ControlResponse = { ok: true; status?: VmStatus; descriptor?: DescriptorSummary & { pausedMs: number } } | { ok: false; error: string };

export function parseRequest(line: string): ControlRequest | { error: string } {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return { error: "request is not JSON" };
  }
  if (typeof value !== "object" || value === null) return { error: "request is not an object" };
  const { v, op, path } = value as Record<string, unknown>;
  if (v !== CONTROL_PROTOCOL_VERSION) return { error: `unsupported protocol version ${String(v)} (this VMM speaks ${CONTROL_PROTOCOL_VERSION})` };
  if (op === "status" || op === "kill") return { v, op };
  if (op === "descriptor") {
    if (typeof path !== "string" || !path.startsWith("/")) return { error: "descriptor needs an absolute path" };
    return { v, op, path };
  }
  return { error: `unknown operation ${JSON.stringify(op)}` };
}
