/**
 * What the mcdist server's owner (server.ts) and its Worker (server-worker.ts) say to each other.
 * The Worker blocks in poll(), so it cannot read messages: stop travels through an eventfd,
 * counters through a SharedArrayBuffer; events go back by postMessage.
 */
import type { Endpoint, TransportSpec } from "./transport.ts";

/** What a client needs to reach a server: its transport kind and its endpoint on it. Plain JSON. */
export interface McdistServerEndpoint {
  kind: TransportSpec["kind"];
  address: Endpoint;
}

export interface ServerInit {
  /** The frozen image; the Worker maps it read-only itself and never closes the fd. */
  imageFd: number;
  size: number;
  family: number;
  key: Uint8Array;
  transport: TransportSpec;
  mtu: number;
  /** The family's VM descriptor, served in chunks to clones that start from it. */
  descriptor?: Uint8Array;
  /** Written once to ask the Worker to stop (wakes its poll). */
  stopFd: number;
  /** Float64Array over a SharedArrayBuffer of Slot.WORDS entries. */
  counters: Float64Array;
}

export type ServerEvent = { type: "ready"; endpoint: McdistServerEndpoint } | { type: "failed"; message: string } | { type: "stopped" };

export const Slot = {
  FRAMES_SENT: 0,
  BYTES_SENT: 1,
  PAGES_SENT: 2,
  /** REQUEST frames that passed validation. */
  REQUESTS: 3,
  /** Pages asked for that were not sent again: multicast (or queued) a moment ago (lockstep). */
  REQUESTS_COLLAPSED: 4,
  /** Requests answered to the requester only (unicast end game). */
  UNICAST_REPLIES: 5,
  /** Frames that reached the server and were refused: malformed, out of range, queue full. */
  DROPPED_REQUESTS: 6,
  /** Frames the transport failed to send (e.g. ENOBUFS); the client's retry covers them. */
  SEND_ERRORS: 7,
  RATE_REPORTS: 8,
  /** The pacing rate in force (pages/s), 0 when unpaced. */
  PACED_RATE: 9,
  WORDS: 10,
} as const;

/** A page multicast less than this long ago is not multicast again for a first request. */
export const LOCKSTEP_MS = 5;
/** A client's RATE report counts for this long. */
export const RATE_REPORT_TTL_MS = 2000;
