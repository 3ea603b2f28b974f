/**
 * Where a clone's missing pages come from, for whatever serves its faults (memtap on KVM, the
 * pager on Xen): the parent's frozen image on the same host, its memory server over one connection
 * (Unix socket or TCP), or mcdist.
 */
import { SnowflockError } from "../errors.ts";
import { McdistClient } from "../mcdist/client.ts";
import { closePreparedPacketRing, type PreparedPacketRing } from "../mcdist/transport.ts";
import { ImageSource } from "./image-source.ts";
import { PageClient } from "./page-client.ts";
import { parsePageServer } from "./page-server-address.ts";

export interface PageSource {
  /** Polled while no fault waits. */
  readonly fd: number;
  fetch(pages: number[]): Uint8Array[];
  /** Several requests with some in flight together (a memory server's connection): see page-requests.ts. */
  fetchEach?(requests: Iterable<number[]>, each: (pages: number[], contents: Uint8Array[]) => void): void;
  /**
   * Where pages stream in one by one (mcdist): `pages` and `ahead` in one request, returning once
   * `pages` are in; `ahead`'s reach onExtraPage as they arrive, or never (a fault then asks again).
   */
  fetchAhead?(pages: number[], ahead: number[]): Uint8Array[];
  /** `fd` turned readable while idle. */
  idle(): void;
  /** Bytes received so far, when the source counts them itself (mcdist's frames). */
  bytesReceived?(): number;
  /** Frames refused as corrupted, malformed or forged (mcdist). */
  framesRejected?(): number;
  /** Requests asked again because their pages did not come in time (mcdist). */
  retries?(): number;
  /** Frames of siblings' pages dropped unread while the clone was behind (mcdist). */
  framesShed?(): number;
  close(): void;
}

export interface PageSourceOptions {
  /** The memory server, in formatPageServer's text form. */
  server: string;
  pageCount: number;
  timeoutMs: number;
  /** Readable once the owner asks the serving thread to stop: ends a wait on the source. */
  wakeFd: number;
  /** mcdist: a page arriving unasked (a sibling asked for it) or asked ahead of a fault (fetchAhead). */
  onExtraPage: (page: number, data: Uint8Array) => void;
  /** A packet socket and ring made ahead, for an mcdist source on that interface (closed if unused). */
  preparedRing?: PreparedPacketRing;
}

const NORMAL_DROPS = new Set(["family", "duplicate", "unexpected", "evicted", "behind"]);

class McdistSource implements PageSource {
  readonly fd: number;
  constructor(private readonly client: McdistClient) {
    this.fd = client.fd;
  }
  fetch(pages: number[]): Uint8Array[] {
    return this.client.fetch(pages);
  }
  fetchAhead(pages: number[], ahead: number[]): Uint8Array[] {
    return this.client.fetch(pages, ahead);
  }
  idle(): void {
    this.client.drain();
  }
  bytesReceived(): number {
    return this.client.stats().bytesReceived;
  }
  framesRejected(): number {
    const dropped = this.client.stats().framesDropped;
    // Other families' frames, duplicates and siblings' requests are normal traffic, not rejections.
    return Object.entries(dropped).reduce((sum, [reason, n]) => (NORMAL_DROPS.has(reason) ? sum : sum + n), 0);
  }
  retries(): number {
    return this.client.stats().retries;
  }
  framesShed(): number {
    return this.client.stats().framesDropped.behind ?? 0;
  }
  close(): void {
    this.client.close();
  }
}

export function openPageSource(options: PageSourceOptions): PageSource {
  const server = parsePageServer(options.server);
  const { pageCount, timeoutMs, wakeFd, preparedRing } = options;
  if (server.kind !== "mcdist") {
    if (preparedRing) closePreparedPacketRing(preparedRing);
    if (server.kind === "image") return ImageSource.open(server.path, pageCount);
    return PageClient.connect(server, { timeoutMs, wakeFd, pageCount });
  }
  if (!server.transport) throw new SnowflockError("MEMORY", "an mcdist memory source needs this host's transport (interface)");
  const client = McdistClient.open({
    transport: server.transport,
    server: server.server,
    family: server.family,
    key: server.key,
    pageCount,
    mtu: server.mtu,
    timeoutMs,
    wakeFd,
    onExtraPage: options.onExtraPage,
    ratePagesPerSecond: "measured",
    preparedRing,
  });
  return new McdistSource(client);
}
