/**
 * What the mcdist server's owner (server.ts) and its Worker (server-worker.ts) say to each other.
 * The Worker blocks in poll(), so it cannot read messages: stop travels through an eventfd,
 * counters through a SharedArrayBuffer; events go back by postMessage.
 */
import type { Endpoint, TransportSpec } from "./transport.ts";
import type { WorkerEvent } from "../worker-link.ts";

/** What a client needs to reach a server: its transport kind and its endpoint on it. Plain JSON. */
export interface McdistServerEndpoint {
  kind: TransportSpec["kind"];
  address: Endpoint;
}

export interface McdistServerOptions {
  /** An open fd of the frozen image; the server maps it read-only and does not close it. */
  imageFd: number;
  /** Bytes to serve (a multiple of the page size). */
  size: number;
  /** The family number every frame carries (u32). */
  family: number;
  /** The family's 32-byte secret: pages carry a GMAC tag under a key derived from it, requests and rate reports an HMAC under it. */
  key: Uint8Array;
  transport: TransportSpec;
  mtu: number;
  /** The family's VM descriptor, for clones that fetch it by multicast too. */
  descriptor?: Uint8Array;
}

export interface ServerInit extends McdistServerOptions {
  /** Written once to ask the Worker to stop (wakes its poll). */
  stopFd: number;
  /** Float64Array over a SharedArrayBuffer of Slot.WORDS entries. */
  counters: Float64Array;
}

export type ServerEvent = WorkerEvent<{ endpoint: McdistServerEndpoint }>;

export const Slot = {
  FRAMES_SENT: 0,
  BYTES_SENT: 1,
  PAGES_SENT: 2,
  /** REQUEST frames that passed validation. */
  REQUESTS: 3,
  /** Pages asked for (first asks) that were not sent again: queued, or sent since the asker could have had them (lockstep). */
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
  /** REQUEST and RATE frames without a tag that verifies with the family key: ignored. */
  REQUESTS_FORGED: 10,
  /** Tagged frames seen before (a sender's sequence already accepted, or too old): ignored. */
  REQUESTS_REPLAYED: 11,
  /** Frames in another mcdist wire version (a peer running another snowflock): ignored. */
  FRAMES_WRONG_VERSION: 12,
  /** Pages (and descriptor chunks) sent again after a first send: retransmissions, to the group or by unicast. */
  PAGES_RESENT: 13,
  /** Pages asked for again (retries, unicast asks) that were not sent again: a queued send or one made since answers them. */
  DUPLICATES_SUPPRESSED: 14,
  WORDS: 15,
} as const;
/** A client's RATE report counts for this long. */
export const RATE_REPORT_TTL_MS = 2000;
/** Senders whose replay window the server keeps (one per client; only holders of the key add one). */
export const MAX_SENDERS = 65536;
