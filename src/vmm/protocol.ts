import { EXIT_RESULT } from "../guest/hypercalls.ts";
import type { ForkResult, MemoryPath, RemoteTransport } from "../clone/fork-result.ts";
import type { CloneMemoryStats } from "../memory/clone-memory-stats.ts";
import type { DescriptorSummary } from "../descriptor/summary.ts";
import { shown } from "../errors.ts";
/**
 * The control protocol of a VMM process: one JSON object per line over its Unix socket.
 * Every request names the protocol version; an unknown version or operation is refused.
 */
export const CONTROL_PROTOCOL_VERSION = 1;
export const MAX_CLONES_PER_FORK = 64;
/** Console input per request: the UART's receive FIFO (4 KiB) in base64. */
export const MAX_INPUT_BYTES = 4096;
const MAX_INPUT_BASE64 = Math.ceil(MAX_INPUT_BYTES / 3) * 4;

export type ControlRequest =
  | { v: number; op: "status" }
  | { v: number; op: "kill" }
  /** Pause, write a VM descriptor to `path` (absolute), resume. */
  | { v: number; op: "descriptor"; path: string }
  /** Clone the VM into `clones` new VMs: on this host, or spread over its cluster (`spread`). */
  | { v: number; op: "fork"; clones: number; memory: MemoryPath; spread?: boolean; transport?: RemoteTransport }
  /** Bytes typed at the guest's console (base64); the answer says how many its UART took. */
  | { v: number; op: "input"; data: string }
  /** A family message for this VM's guest (sf_recv); `data` is base64. */
  | { v: number; op: "message"; from: number; data: string }
  /** From a clone's VMM to its parent's: its vCPUs run (times since the clone process started). */
  | { v: number; op: "clone-started"; cloneId: number; builtMs: number; runningMs: number }
  /** From a clone's VMM to its parent's: how the clone ended. */
  /** `incarnation`: which run of the parent the clone belongs to; a report for an earlier VM of the same name is ignored. */
  | {
      v: number;
      op: "clone-ended";
      cloneId: number;
      status: number;
      memory?: CloneMemoryStats;
      incarnation?: string;
      /** What the clone handed its parent's join (sf exit STATUS RESULT). */
      result?: string;
    };

export interface VmStatus {
  name: string;
  parent?: string;
  cloneId?: number;
  /** For a VM in a cluster: the inventory host it runs on. */
  host?: string;
  pid: number;
  workload: string;
  state: "starting" | "running" | "paused" | "stopping";
  /** Since this VMM process started: VM built (booted or restored), and vCPUs running. */
  timings: { builtMs: number; runningMs: number | null };
  memoryBytes: number;
  vcpus: number;
  uptimeMs: number;
  consoleLines: number;
  /** Guest pages ever written (resident in the memfd), counted with the WASM page bitmap. */
  pagesTouched: number;
}

export type ControlResponse =
  | { ok: true; status?: VmStatus; descriptor?: DescriptorSummary & { pausedMs: number }; fork?: ForkResult; accepted?: number }
  | { ok: false; error: string };

export function parseRequest(line: string): ControlRequest | { error: string } {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return { error: "request is not JSON" };
  }
  if (typeof value !== "object" || value === null) return { error: "request is not an object" };
  const { v, op, path, clones, from, data, cloneId, status, builtMs, runningMs, memory, spread, transport, incarnation, result } =
    value as Record<string, unknown>;
  const isInt = (n: unknown): n is number => typeof n === "number" && Number.isSafeInteger(n);
  if (v !== CONTROL_PROTOCOL_VERSION)
    return { error: `unsupported protocol version ${shown(v)} (this VMM speaks ${CONTROL_PROTOCOL_VERSION})` };
  if (op === "status" || op === "kill") return { v, op };
  if (op === "descriptor") {
    if (typeof path !== "string" || !path.startsWith("/")) return { error: "descriptor needs an absolute path" };
    return { v, op, path };
  }
  if (op === "fork") {
    if (typeof clones !== "number" || !Number.isInteger(clones) || clones < 1 || clones > MAX_CLONES_PER_FORK)
      return { error: `fork needs a clone count from 1 to ${MAX_CLONES_PER_FORK}` };
    if (memory !== "cow" && memory !== "ondemand") return { error: "fork memory must be cow or ondemand" };
    if (spread !== undefined && typeof spread !== "boolean") return { error: "fork spread must be true or false" };
    if (transport !== undefined && transport !== "tcp" && transport !== "packet" && transport !== "udp")
      return { error: "fork transport must be packet, udp or tcp" };
    return { v, op, clones, memory, spread, transport };
  }
  if (op === "input") {
    if (typeof data !== "string" || data.length > MAX_INPUT_BASE64) return { error: "input needs base64 data up to 4 KiB" };
    return { v, op, data };
  }
  if (op === "message") {
    if (!isInt(from) || from < 0 || typeof data !== "string" || data.length > 100_000)
      return { error: "message needs from (a clone ID) and base64 data up to 64 KiB" };
    return { v, op, from, data };
  }
  if (op === "clone-started") {
    if (!isInt(cloneId) || cloneId < 1 || typeof builtMs !== "number" || typeof runningMs !== "number")
      return { error: "clone-started needs cloneId, builtMs and runningMs" };
    return { v, op, cloneId, builtMs, runningMs };
  }
  if (op === "clone-ended") {
    if (!isInt(cloneId) || cloneId < 1 || !isInt(status)) return { error: "clone-ended needs cloneId and status" };
    if (incarnation !== undefined && (typeof incarnation !== "string" || incarnation.length > 64))
      return { error: "clone-ended incarnation must be a short string" };
    if (result !== undefined && (typeof result !== "string" || !EXIT_RESULT.test(result)))
      return { error: "clone-ended result must be up to 64 of 0-9 A-Z a-z . _ + -" };
    const counters = memory as Record<string, unknown> | undefined;
    const histogram = counters?.faultServiceHistogram;
    const valid =
      counters === undefined ||
      (typeof counters === "object" &&
        counters !== null &&
        ["faults", "pagesFetched", "pagesZeroFilled", "bytesReceived"].every((k) => isInt(counters[k])) &&
        ["pagesMulticast", "framesRejected", "retries", "framesShed", "pagesFreeFilled", "pagesAllocationFilled", "pagesPrefetched"].every(
          (k) => counters[k] === undefined || isInt(counters[k]),
        ) &&
        (histogram === undefined || (Array.isArray(histogram) && histogram.length <= 64 && histogram.every(isInt))));
    if (!valid) return { error: "clone-ended memory counters must be whole numbers" };
    return {
      v,
      op,
      cloneId,
      status,
      memory: counters as CloneMemoryStats | undefined,
      incarnation,
      ...(result === undefined ? {} : { result }),
    };
  }
  return { error: `unknown operation ${shown(op)}` };
}
