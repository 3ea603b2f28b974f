/**
 * What memtap's main-thread side and its fault-handling Worker say to each other. The Worker
 * blocks in poll(), so it cannot read messages: stop travels through an eventfd, counters through
 * a SharedArrayBuffer; events go back by postMessage.
 */
import type { WorkerEvent } from "../worker-link.ts";
import type { AllocationHints } from "../guest-memory/allocation-hints.ts";
import type { PreparedPacketRing } from "../mcdist/transport.ts";

export interface MemtapInit {
  uffd: number;
  /** Written once to ask the Worker to stop (wakes its poll). */
  stopFd: number;
  address: number;
  size: number;
  /** The memory server, in formatPageServer's text form. */
  server: string;
  /** The descriptor's non-zero bitmap: bit i (byte i>>3, bit i&7) set when page i may be non-zero. */
  nonZeroPages: Uint8Array;
  /** Bit i set: page i is zero-filled because it was free (free-pages), for the counters. */
  freePages: Uint8Array;
  /** Ask for the pages after a fault in the same round (the prefetch heuristic). */
  prefetch: boolean;
  /** Pages the guest's allocator handed out (allocation-hints): zero-filled instead of fetched. */
  allocationHints: AllocationHints | undefined;
  timeoutMs: number;
  /** Float64Array over a SharedArrayBuffer of Slot.WORDS entries. */
  counters: Float64Array;
  /** Who closes the uffd, and whether it is closed (UffdState): exactly one side claims it. */
  uffdClosed: Int32Array;
  /** A packet socket and ring the process made ahead (pool/), for an mcdist source on that interface. */
  preparedRing?: PreparedPacketRing;
}

/** Sent to a Worker started ahead instead of an init: make what an mcdist source needs now (a ready VMM in a cluster). */
export interface MemtapPrepare {
  type: "prepare-mcdist";
}

export const UffdState = {
  OPEN: 0,
  /** The Worker claimed it and is closing it. */
  CLAIMED: 1,
  CLOSED_BY_WORKER: 2,
  CLOSED_BY_OWNER: 3,
} as const;

/** `stopped`: the Worker has closed the userfaultfd and its connection. */
export type MemtapEvent = WorkerEvent<object>;

/** After a failure, how long the Worker waits for stop() before it fences guest memory itself. */
export const FENCE_AFTER_MS = 2000;
