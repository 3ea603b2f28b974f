/**
 * The parent side of mcdist: starts the server Worker (server-worker.ts) that multicasts pages of
 * a frozen memory image to the family, and gives its owner the endpoint clients need, live
 * counters and a way to stop it. It runs in a Worker because its loop blocks in poll(2), and the
 * parent's event loop must not.
 */
import { SnowflockError } from "../errors.ts";
import { PAGE_SIZE } from "../guest-memory/layout.ts";
import { checkFamilyKey } from "./messages.ts";
import { type McdistServerEndpoint, type McdistServerOptions, type ServerInit, Slot } from "./server-protocol.ts";
import { checkTransportSpec } from "./transport.ts";
import { scaledTimeout } from "../timeouts.ts";
import { WorkerLink } from "../worker-link.ts";

export type { McdistServerEndpoint, McdistServerOptions } from "./server-protocol.ts";

export interface McdistServerStats {
  framesSent: number;
  bytesSent: number;
  pagesSent: number;
  requests: number;
  /** Pages asked for that were not sent again: queued, or just sent (lockstep). */
  requestsCollapsed: number;
  /** Pages (and descriptor chunks) sent more than once: retransmissions. */
  pagesResent: number;
  /** Pages asked for again (retries, unicast end game) and not sent again: a queued or recent send answers them. */
  duplicatesSuppressed: number;
  unicastReplies: number;
  droppedRequests: number;
  sendErrors: number;
  rateReports: number;
  /** Pages/s the server paces at (the slowest recent RATE report, at least MIN_PACED_RATE); 0 when unpaced. */
  pacedRate: number;
  /** REQUEST/RATE frames refused for a missing or bad tag (peers without the family key). */
  requestsForged: number;
  /** Tagged frames refused as replays. */
  requestsReplayed: number;
  /** Frames refused for another mcdist wire version. */
  framesWrongVersion: number;
}

export interface McdistServer {
  /** What clients need to reach this server (plain JSON). */
  endpoint: McdistServerEndpoint;
  stats(): McdistServerStats;
  /** Settles with the reason if the server fails; never settles otherwise. */
  failed: Promise<Error>;
  close(): Promise<void>;
}

const START_TIMEOUT_MS = scaledTimeout(10_000);
const STOP_TIMEOUT_MS = scaledTimeout(3000);

/** See MEMTAP_WORKER_URL in memtap.ts: a compiled executable keeps the entry's path from the project root. */
const SERVER_WORKER_URL = import.meta.url.includes("/$bunfs/")
  ? new URL("./src/mcdist/server-worker.ts", import.meta.url).href
  : new URL("./server-worker.ts", import.meta.url).href;

function checkOptions(options: McdistServerOptions): void {
  const bad = (what: string) => new SnowflockError("USAGE", `cannot start the mcdist server: ${what}`);
  if (!Number.isInteger(options.size) || options.size <= 0 || options.size % PAGE_SIZE !== 0)
    throw bad(`the image size ${options.size} is not a positive multiple of ${PAGE_SIZE}`);
  if (!Number.isInteger(options.family) || options.family < 0 || options.family > 0xffffffff)
    throw bad(`the family ${options.family} is not a u32`);
  if (!Number.isInteger(options.imageFd) || options.imageFd < 0) throw bad(`bad image fd ${options.imageFd}`);
  try {
    checkFamilyKey(options.key);
  } catch (error) {
    throw bad((error as Error).message);
  }
  checkTransportSpec(options.transport);
}

export async function startMcdistServer(options: McdistServerOptions): Promise<McdistServer> {
  checkOptions(options);
  const counters = new Float64Array(new SharedArrayBuffer(Slot.WORDS * 8));
  const link = new WorkerLink<{ endpoint: McdistServerEndpoint }>(SERVER_WORKER_URL, "the mcdist server");
  const close = () => link.finish(STOP_TIMEOUT_MS);
  const init: ServerInit = { ...options, key: options.key.slice(), descriptor: options.descriptor?.slice(), stopFd: link.stopFd, counters };
  link.worker.postMessage(init);
  let endpoint: McdistServerEndpoint;
  try {
    ({ endpoint } = await link.whenReady(START_TIMEOUT_MS, `the mcdist server did not start within ${START_TIMEOUT_MS} ms`));
  } catch (error) {
    await close();
    throw error;
  }
  return { endpoint, failed: link.failed, stats: () => readStats(counters), close };
}

function readStats(c: Float64Array): McdistServerStats {
  return {
    framesSent: c[Slot.FRAMES_SENT]!,
    bytesSent: c[Slot.BYTES_SENT]!,
    pagesSent: c[Slot.PAGES_SENT]!,
    requests: c[Slot.REQUESTS]!,
    requestsCollapsed: c[Slot.REQUESTS_COLLAPSED]!,
    pagesResent: c[Slot.PAGES_RESENT]!,
    duplicatesSuppressed: c[Slot.DUPLICATES_SUPPRESSED]!,
    unicastReplies: c[Slot.UNICAST_REPLIES]!,
    droppedRequests: c[Slot.DROPPED_REQUESTS]!,
    sendErrors: c[Slot.SEND_ERRORS]!,
    rateReports: c[Slot.RATE_REPORTS]!,
    pacedRate: c[Slot.PACED_RATE]!,
    requestsForged: c[Slot.REQUESTS_FORGED]!,
    requestsReplayed: c[Slot.REQUESTS_REPLAYED]!,
    framesWrongVersion: c[Slot.FRAMES_WRONG_VERSION]!,
  };
}
