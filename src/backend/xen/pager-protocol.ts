/**
 * What the Xen pager's owner (pager.ts) and its Worker (pager-worker.ts) say to each other. Two
 * messages in: `attach` (become the domain's pager and page out its RAM: the clone shell), later
 * `serve` (the page source and plan, once a fork has one). The Worker then blocks in poll(2):
 * stop travels through an eventfd, counters through a SharedArrayBuffer, events back by postMessage.
 */
import type { WorkerEvent } from "../../worker-link.ts";

export interface PagerAttach {
  kind: "attach";
  domid: number;
  /** Guest frames [0, ramPages) are paged out (those Xen refuses stay present; see PagerAttached.present). */
  ramPages: number;
  /** Written once to ask the Worker to stop (wakes its poll). */
  stopFd: number;
  /** Float64Array over a SharedArrayBuffer of fault-counters' Slot.WORDS entries. */
  counters: Float64Array;
}

export interface PagerServe {
  kind: "serve";
  /** The memory server, in formatPageServer's text form; its backing pages are guest frames. */
  server: string;
  /** Bit i set: frame i may be non-zero (fetch it); clear: zero-filled here. */
  nonZeroPages: Uint8Array;
  /** Bit i set: frame i is zero-filled because it was free (free-pages), for the counters. */
  freePages: Uint8Array;
  prefetch: boolean;
  /** Frames loaded before the domain runs: those the guest hands to Xen, which Xen never asks a pager for. */
  eagerFrames: number[];
  timeoutMs: number;
}

/** Ends a pager that is attached but not serving (a serving one is woken through its stop eventfd). */
export interface PagerStop {
  kind: "stop";
}

export type PagerCommand = PagerAttach | PagerServe | PagerStop;

/** `ready`, after attach: the shell is paged out. */
export interface PagerAttached {
  pagedOut: number;
  /** Frames Xen would not page out (in use by Xen or mapped): their contents are written by the pager before it serves. */
  present: number[];
  evictMs: number;
}

export type PagerNote =
  | { kind: "progress"; done: number; total: number }
  /** The eager and present frames are in; the domain may run. */
  | { kind: "serving"; loadMs: number };

export type PagerEvent = WorkerEvent<PagerAttached>;
