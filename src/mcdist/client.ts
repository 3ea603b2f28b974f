/**
 * The clone side of mcdist, for memtap's fault Worker: synchronous, every wait bounded by a
 * deadline and cut short by a wake fd (like page-client.ts). It asks the family's server for pages
 * and collects them from the multicast stream; pages a sibling asked for that arrive meanwhile are
 * handed to onExtraPage (free prefetch). Nothing reaches the caller that has not passed the
 * page's GMAC tag: forged, corrupted, duplicated or stray frames are dropped and counted. A client
 * that falls behind (a full batch waiting) drops siblings' pages unread until it catches up: it
 * cannot afford their prefetch, and its own pages wait behind them. Its own
 * requests and rate reports are tagged with the family key (control.ts). Lost frames are asked
 * for again (retry, then unicast), and a silent server is a clear failure.
 */
import { SnowflockError } from "../errors.ts";
import { pollRetrying, Woken } from "../sys/poll-retrying.ts";
import { POLLIN } from "../sys/constants.ts";
import { threadCpuMicros } from "../sys/process.ts";
import { newSender, sealControl } from "./control.ts";
import { decodeFrame, encodeFrame, type Frame, FrameType, peekPages } from "./frame.ts";
import { LossRateCap } from "./loss-rate.ts";
import {
  checkFamilyKey,
  DESCRIPTOR_CHUNK,
  descriptorChunks,
  encodeRate,
  encodeRequest,
  MAX_CHUNK_OBJECT_SIZE,
  MAX_REQUEST_PAGES,
  MIN_PACED_RATE,
  PAGE_OBJECT_SIZE,
  RequestFlag,
  verifyChunkObject,
  verifyPageObject,
} from "./messages.ts";
import { prepareReassembly, WasmReassembly as Reassembly } from "../wasm/reassembly.ts";
import { GroupSequence } from "./group-sequence.ts";
import type { McdistServerEndpoint } from "./server-protocol.ts";
import { MAX_RTO_MS, RetransmitTimer } from "./retransmit-timer.ts";
import {
  checkTransportSpec,
  openTransport,
  type PreparedPacketRing,
  parseMac,
  parseUdpEndpoint,
  type Transport,
  type TransportSpec,
} from "./transport.ts";

/** Retries by multicast before the client asks for unicast answers (the end game). */
export const MULTICAST_RETRIES = 3;
/** Frames handled per drain before returning to the caller's poll; a full batch waiting means the client is behind. */
const RECEIVE_BATCH = 1024;
const DRAIN_BATCHES = 16;
const MAX_PARTIAL_PAGES = 512;
const MAX_PARTIAL_CHUNKS = 2 * MAX_REQUEST_PAGES;
const PAGE_REASSEMBLY = { maxPartial: MAX_PARTIAL_PAGES, maxObjectBytes: PAGE_OBJECT_SIZE };
const DESCRIPTOR_REASSEMBLY = { maxPartial: MAX_PARTIAL_CHUNKS, maxObjectBytes: MAX_CHUNK_OBJECT_SIZE };
const NO_REASSEMBLY = { duplicates: 0, inconsistent: 0, oversized: 0, evicted: 0 };

/**
 * Makes the WebAssembly reassembly a client takes pages (or a descriptor) with now, for the next
 * client of this thread: a ready VMM's (pool/), as its instantiation costs a clone 4 ms each.
 */
export function prepareMcdistClient(what: "pages" | "descriptor"): void {
  prepareReassembly(what === "pages" ? PAGE_REASSEMBLY : DESCRIPTOR_REASSEMBLY);
}

/** After a gap in the server's group sequence, what is missing is asked again after this share of the retransmission timeout of quiet. */
const FAST_RETRY_SHARE = 4;
/** How often a configured rate is reported again (the server forgets reports after 2 s). */
const RATE_REPORT_EVERY_MS = 1000;
/** A measured capacity is reported at this share of what handling costs, and never below the server's floor. */
const CAPACITY_HEADROOM = 0.8;
/**
 * Pages handled before a measured capacity counts: the first pages pay for cold code, and one such
 * page measured as the whole capacity paced a lone clone at a tenth of its speed for a second.
 */
export const MIN_MEASURED_PAGES = 256;
/** Where a measuring client's cap starts halving when the server was not paced yet (pages/s, 64 MB/s). */
const UNPACED_RATE_GUESS = 16384;

export interface McdistClientOptions {
  /** Where to listen and send; a Transport already open is owned (closed) by the client. */
  transport: TransportSpec | Transport;
  server: McdistServerEndpoint;
  family: number;
  key: Uint8Array;
  /** Pages in the image; anything outside is refused. */
  pageCount: number;
  mtu: number;
  /** How long one fetch() may wait for its pages, retries included. */
  timeoutMs: number;
  /** A readable fd that means "stop waiting" (an eventfd); -1 for none. */
  wakeFd: number;
  /** Called with each verified page that arrives without being asked for by this fetch (once per page); `data` is valid during the call only. */
  onExtraPage?: (page: number, data: Uint8Array) => void;
  /**
   * The pages/s this client keeps up with, reported to the server for pacing: a fixed number, or
   * "measured" — what its own handling of a page (reassembly, tag check, onExtraPage's install)
   * costs, with headroom, reported while siblings' pages reach it too (and a cap after losses).
   */
  ratePagesPerSecond?: number | "measured";
  /** A packet transport it opens reads from a ring (the default) or frame by frame (TransportOptions.ring). */
  ring?: boolean;
  /** A packet socket and ring made ahead (a ready VMM's): the transport it opens takes them. */
  preparedRing?: PreparedPacketRing;
}

export interface McdistClientStats {
  framesReceived: number;
  bytesReceived: number;
  /** Dropped frames by reason: frame.ts's (checksum, family, magic, ...), forged, malformed, duplicate, unexpected, inconsistent, oversized, evicted, behind. */
  framesDropped: Record<string, number>;
  requestsSent: number;
  pagesRequested: number;
  pagesReceivedUnasked: number;
  retries: number;
  unicastFallbacks: number;
  sendErrors: number;
}

export class McdistClient {
  readonly fd: number;
  private readonly buffer = new Uint8Array(65536);
  /** Made on first use (a few MiB of WebAssembly memory each): a memtap client never fetches a descriptor, a descriptor's client rarely sees a page. */
  private pageReassembly: Reassembly | undefined;
  private descriptorReassembly: Reassembly | undefined;
  /** While a descriptor is fetched: its chunks so far, and how many are still missing. */
  private chunks: Array<Uint8Array | undefined> | undefined;
  private chunksMissing = 0;
  /** Pages already handed out (returned or given to onExtraPage): later copies are dropped early. */
  private readonly delivered: Uint8Array;
  /** Who this client is to the server (inside every tag): its sequence numbers are counted per sender. */
  private readonly sender = newSender();
  private sequence = 0;
  private rateReportedAt = -Infinity;
  private rateReported: number | undefined;
  /** A measuring client's reports, held down while its frames go missing (loss-rate.ts). */
  private readonly lossCap = new LossRateCap(MIN_PACED_RATE, UNPACED_RATE_GUESS);
  /** Gaps in what the server sends to the group: frames lost on the way. */
  private readonly groupSequence = new GroupSequence();
  /** When to ask again: learnt from this client's round trips, kept across fetches. */
  private readonly timer: RetransmitTimer;
  /** pagesReceivedUnasked at the last sharesStream(). */
  private unaskedSeen = 0;
  /** Pages completed, and the time spent reading and handling frames, since the last measured report. */
  private handled = { pages: 0, micros: 0 };
  /** The current fetch: page → its index in the answer. */
  private wanted: Map<number, number> | undefined;
  private results: Array<Uint8Array | undefined> = [];
  private missing = 0;
  /** The last read found a full batch waiting: pages not asked for are dropped unread meanwhile. */
  private behind = false;
  private readonly counters = {
    framesReceived: 0,
    bytesReceived: 0,
    requestsSent: 0,
    pagesRequested: 0,
    pagesReceivedUnasked: 0,
    retries: 0,
    unicastFallbacks: 0,
    sendErrors: 0,
  };
  private readonly dropped: Record<string, number> = {};

  private constructor(
    private readonly transport: Transport,
    private readonly options: McdistClientOptions,
  ) {
    this.fd = transport.fd;
    // Several retries (the last by unicast) must fit in one fetch's time.
    this.timer = new RetransmitTimer(Math.min(MAX_RTO_MS, options.timeoutMs / (MULTICAST_RETRIES + 2)));
    this.delivered = new Uint8Array(options.pageCount);
  }

  static open(options: McdistClientOptions): McdistClient {
    checkFamilyKey(options.key);
    if (!Number.isInteger(options.pageCount) || options.pageCount <= 0) throw new RangeError(`bad page count ${options.pageCount}`);
    if (!(options.timeoutMs > 0)) throw new RangeError(`bad timeout ${options.timeoutMs} ms`);
    const given = "fd" in options.transport ? options.transport : undefined;
    const transport =
      given ??
      openTransport(checkTransportSpec(options.transport), {
        family: options.family,
        mtu: options.mtu,
        ring: options.ring,
        prepared: options.preparedRing,
      });
    try {
      const { server } = options;
      if (server.kind !== transport.kind)
        throw new SnowflockError("USAGE", `the mcdist server is on a ${server.kind} transport; this client's is ${transport.kind}`);
      if (server.kind === "packet") parseMac(server.address);
      else parseUdpEndpoint(server.address);
      const client = new McdistClient(transport, options);
      client.maybeReportRate();
      return client;
    } catch (error) {
      transport.close();
      throw error;
    }
  }

  /**
   * The contents of `pages`, each verified. `ahead` (prefetch) is asked for in the same request but
   * not waited for: those pages reach onExtraPage as they arrive, after this returns or during it,
   * and one lost is not asked again (its fault will). Together at most MAX_REQUEST_PAGES, distinct.
   * Throws Woken or a MEMORY error.
   */
  fetch(pages: number[], ahead: number[] = []): Uint8Array[] {
    this.checkPages([...pages, ...ahead]);
    this.wanted = new Map(pages.map((page, i) => [page, i]));
    this.results = new Array(pages.length).fill(undefined);
    this.missing = pages.length;
    this.counters.pagesRequested += pages.length + ahead.length;
    try {
      this.drain(); // a sibling may have asked for some already: they may be waiting, unread
      const missing = () => pages.filter((p) => this.results[this.wanted!.get(p)!] === undefined);
      if (this.missing > 0) this.await(missing, () => this.missing, 0, "page", ahead);
      return this.results as Uint8Array[];
    } finally {
      this.wanted = undefined;
      this.results = [];
    }
  }

  /**
   * Handles the waiting frames (call when fd is readable between fetches): completed pages go to
   * onExtraPage. Bounded, so a flood cannot keep the caller here; the fd stays readable if more wait.
   */
  drain(): void {
    for (let i = 0; i < DRAIN_BATCHES && this.receiveWaiting() === RECEIVE_BATCH; i++) {}
  }

  /** Tells the server how many pages/s this client keeps up with (it paces no slower than MIN_PACED_RATE). */
  reportRate(pagesPerSecond: number): void {
    this.sendFrame(FrameType.RATE, 0n, encodeRate(pagesPerSecond));
    this.rateReportedAt = performance.now();
    this.rateReported = pagesPerSecond;
  }

  stats(): McdistClientStats {
    const r = this.pageReassembly?.counters ?? NO_REASSEMBLY;
    const framesDropped: Record<string, number> = { ...this.dropped };
    for (const [reason, n] of [
      ["duplicate", r.duplicates],
      ["inconsistent", r.inconsistent],
      ["oversized", r.oversized],
      ["evicted", r.evicted],
    ] as const) {
      if (n > 0) framesDropped[reason] = (framesDropped[reason] ?? 0) + n;
    }
    return { ...this.counters, framesDropped };
  }

  close(): void {
    try {
      this.transport.close();
    } catch {}
  }

  private checkPages(pages: number[]): void {
    if (pages.length === 0 || pages.length > MAX_REQUEST_PAGES)
      throw new RangeError(`fetch takes 1 to ${MAX_REQUEST_PAGES} pages, not ${pages.length}`);
    for (const page of pages)
      if (!Number.isInteger(page) || page < 0 || page >= this.options.pageCount)
        throw new RangeError(`page ${page} is outside the image (${this.options.pageCount} pages)`);
    if (new Set(pages).size !== pages.length) throw new RangeError("fetch was given the same page twice");
  }

  /**
   * Requests what is missing (pages, or descriptor chunks with the DESCRIPTOR flag) and waits for
   * it. While what is missing keeps arriving the rest is on its way; after a retransmission timeout
   * with nothing new (retransmit-timer.ts) it reads what waits first (a descheduled clone's pages
   * may be there), then asks again for what is still missing; after MULTICAST_RETRIES, by unicast.
   */
  private await(missing: () => number[], remaining: () => number, kind: number, what: string, ahead: number[] = []): void {
    const started = performance.now();
    const deadline = started + this.options.timeoutMs;
    let retries = 0;
    this.groupSequence.takeLoss(); // only gaps while this one waits count
    this.request([...missing(), ...ahead.filter((page) => this.delivered[page] !== 1)], kind);
    let left = remaining();
    let nextRetry = started + this.timer.timeoutMs;
    const watch = [{ fd: this.fd, events: POLLIN }];
    if (this.options.wakeFd >= 0) watch.push({ fd: this.options.wakeFd, events: POLLIN });
    let sampled = false;
    let quietSince = started;
    const progressed = (now: number): boolean => {
      if (remaining() === left) return false;
      // The first answer times the round trip; Karn: only for a request that was sent once.
      if (retries === 0 && !sampled) this.timer.sample(now - started);
      else this.timer.progress();
      sampled = true;
      left = remaining();
      nextRetry = now + this.timer.timeoutMs;
      quietSince = now;
      return true;
    };
    // A gap in the server's group sequence: what is still missing was lost, not late (frames keep
    // their order on a link). It is asked for again once the frames stop coming, not after a whole
    // retransmission timeout (TCP's fast retransmit).
    const fastRetryAt = () => (this.groupSequence.lossSeen ? quietSince + this.timer.timeoutMs / FAST_RETRY_SHARE : Infinity);
    while (left > 0) {
      const now = performance.now();
      if (now >= nextRetry || now >= fastRetryAt() || now >= deadline) {
        this.drain();
        if (progressed(now)) continue;
        if (now >= deadline) throw this.silent(`${what} ${missing()[0]}`, retries);
        retries++;
        this.counters.retries++;
        // Frames went missing: a measuring client slows the server down before it asks again, where
        // the transport can tell only when some were lost (framesLost): a clone waiting for a core
        // among many on few cores times out with nothing lost, and halving on each such timeout
        // paced the family's server down to its floor (32 clones over 8 test hosts over packet:
        // 14-17 s to the result; 5-8 s with this and the CPU-time capacity above).
        const lost = this.framesLost();
        if (retries === 1 && this.options.ratePagesPerSecond === "measured" && lost) this.reportRate(this.lossCap.lost(this.rateReported));
        if (now >= nextRetry) this.timer.backOff();
        const unicast = retries > MULTICAST_RETRIES;
        if (retries === MULTICAST_RETRIES + 1) this.counters.unicastFallbacks++;
        this.request(missing(), kind | RequestFlag.RETRY | (unicast ? RequestFlag.UNICAST : 0));
        nextRetry = now + this.timer.timeoutMs;
        quietSince = now;
      }
      const due = Math.min(nextRetry, deadline, fastRetryAt());
      const [socket = 0, wake = 0] = pollRetrying(watch, Math.max(1, Math.ceil(due - now)));
      if (wake !== 0) throw new Woken("stop requested");
      if (socket !== 0) {
        this.receiveWaiting();
        if (remaining() !== left) progressed(performance.now());
      }
    }
  }

  /**
   * Whether frames went missing since the last look: the kernel dropped some, or the server's group
   * sequence skipped some (lost before they reached this socket). A transport that can tell
   * neither (udp) counts every timeout as a loss.
   */
  private framesLost(): boolean {
    const dropped = this.transport.framesDropped();
    const gap = this.groupSequence.takeLoss();
    return dropped === undefined || dropped > 0 || gap;
  }

  private silent(what: string, retries: number): SnowflockError {
    const otherVersion = this.dropped.version ?? 0;
    return new SnowflockError(
      "MEMORY",
      `the mcdist server at ${this.options.server.address} did not answer ${what} within ${this.options.timeoutMs} ms (${retries} retries; ` +
        `${this.counters.framesReceived} frames received, dropped: ${JSON.stringify(this.stats().framesDropped)}` +
        `${this.lossCap.current !== undefined ? `; asked the server for ${this.lossCap.current} pages/s` : ""})`,
      otherVersion > 0
        ? `${otherVersion} frames of another mcdist wire version were refused: run the same snowflock on every host`
        : "is the parent's mcdist server running, and this host on the family's network?",
    );
  }

  /**
   * The family's descriptor (`bytes` long), fetched in chunks by multicast: clones starting
   * together on many hosts cost the server about one copy. Every chunk's tag is checked, and the
   * whole must have the SHA-256 the (authenticated) clone order named.
   */
  fetchDescriptor(bytes: number, sha256: string): Uint8Array {
    const count = descriptorChunks(bytes);
    if (count === 0 || count > MAX_REQUEST_PAGES)
      throw new RangeError(
        `a descriptor of ${bytes} bytes is not fetched by multicast (1 to ${MAX_REQUEST_PAGES * DESCRIPTOR_CHUNK} bytes)`,
      );
    const chunks: Array<Uint8Array | undefined> = new Array(count).fill(undefined);
    this.chunks = chunks;
    this.chunksMissing = count;
    try {
      const missing = () => chunks.flatMap((chunk, i) => (chunk === undefined ? [i] : []));
      this.receiveWaiting();
      if (missing().length > 0) this.await(missing, () => this.chunksMissing, RequestFlag.DESCRIPTOR, "descriptor chunk");
    } finally {
      this.chunks = undefined;
    }
    const whole = new Uint8Array(chunks.reduce((sum, c) => sum + c!.byteLength, 0));
    let at = 0;
    for (const chunk of chunks) whole.set(chunk!, at), (at += chunk!.byteLength);
    const digest = new Bun.CryptoHasher("sha256").update(whole).digest("hex");
    if (whole.byteLength !== bytes || digest !== sha256) {
      throw new SnowflockError(
        "DESCRIPTOR",
        `the descriptor received by multicast has ${whole.byteLength} bytes and SHA-256 ` +
          `${digest.slice(0, 16)}…; the clone order named ${bytes} bytes and ${sha256.slice(0, 16)}…`,
      );
    }
    return whole;
  }

  private request(pages: number[], flags: number): void {
    this.maybeReportRate();
    const heardFrom = this.groupSequence.heardFrom;
    this.sendFrame(FrameType.REQUEST, BigInt(pages[0]!), encodeRequest({ flags, pages, ...(heardFrom !== undefined && { heardFrom }) }));
    this.counters.requestsSent++;
  }

  private maybeReportRate(): void {
    const option = this.options.ratePagesPerSecond;
    if (option === undefined || performance.now() - this.rateReportedAt < RATE_REPORT_EVERY_MS) return;
    const rate = option === "measured" ? this.lossCap.report(this.sharesStream() ? this.measuredCapacity() : undefined) : option;
    if (rate !== undefined) this.reportRate(rate);
  }

  /**
   * Whether siblings' pages reached this client since the last look. Alone, what reaches it is what
   * it asked for, one request (at most MAX_REQUEST_PAGES) at a time, which its socket holds: a pace
   * cannot spare it a loss, only slow it (paced at the capacity it measured over its first, cold
   * pages, 27k pages/s where it handles 130k, a lone client's fetches of 29 pages back to back over
   * a veth pair took 3x TCP's). Its report lapses on the server (RATE_REPORT_TTL_MS); a loss cap
   * still goes out.
   */
  private sharesStream(): boolean {
    const unasked = this.counters.pagesReceivedUnasked;
    const shared = unasked > this.unaskedSeen;
    this.unaskedSeen = unasked;
    return shared;
  }

  /** Pages/s this client could handle: what its frames cost per completed page since the last report. */
  private measuredCapacity(): number | undefined {
    const { pages, micros } = this.handled;
    if (pages < MIN_MEASURED_PAGES || micros === 0) return undefined;
    this.handled = { pages: 0, micros: 0 };
    return Math.max(MIN_PACED_RATE, Math.floor((CAPACITY_HEADROOM * 1e6 * pages) / micros));
  }

  /** A send that fails (e.g. ENOBUFS) counts as a lost frame: the retry covers it, the deadline bounds it. */
  private sendFrame(type: FrameType, object: bigint, message: Uint8Array): void {
    this.sequence = (this.sequence + 1) >>> 0;
    const header = { type, family: this.options.family, sequence: this.sequence, object };
    const payload = sealControl(this.options.key, header, this.sender, message);
    const bytes = encodeFrame({ ...header, fragment: 0, fragments: 1, payload });
    try {
      this.transport.send(this.options.server.address, bytes);
    } catch {
      this.counters.sendErrors++;
    }
  }

  private drop(reason: string): false {
    this.dropped[reason] = (this.dropped[reason] ?? 0) + 1;
    return false;
  }

  /** drop() for a frame that completed no page. */
  private dropFrame(reason: string): 0 {
    this.drop(reason);
    return 0;
  }

  /** Handles up to RECEIVE_BATCH waiting frames; returns how many it read. */
  private receiveWaiting(): number {
    // Timed per batch, not per frame (a clock read can cost as much as a frame under emulation), and
    // in this thread's CPU time: a clone waiting for a core among many clones on few cores handles
    // frames no slower, but timed by the wall clock it reported a fraction of its capacity, and the
    // family's server is paced at its slowest member's report.
    const started = threadCpuMicros();
    let n = 0;
    for (; n < RECEIVE_BATCH; n++) {
      const length = this.transport.receive(this.buffer);
      if (length === undefined) break;
      this.counters.framesReceived++;
      this.counters.bytesReceived += length;
      const bytes = this.buffer.subarray(0, length);
      if (this.behind && this.unasked(bytes)) this.drop("behind");
      else this.handled.pages += this.handleFrame(bytes);
    }
    if (n > 0) this.handled.micros += threadCpuMicros() - started;
    this.behind = n === RECEIVE_BATCH;
    return n;
  }

  /** A frame of pages none of which the current fetch (if any) waits for. */
  private unasked(bytes: Uint8Array): boolean {
    const pages = peekPages(bytes, this.options.family);
    if (pages === undefined) return false;
    for (let page = pages.first; page < pages.first + pages.count; page++) if (this.wanted?.get(page) !== undefined) return false;
    return true;
  }

  /** A descriptor chunk: kept only while a descriptor is being fetched. */
  private handleChunk(frame: Frame): boolean {
    const chunks = this.chunks;
    if (!chunks) return this.drop("unexpected");
    if (frame.object >= BigInt(chunks.length)) return this.drop("malformed");
    const chunk = Number(frame.object);
    if (chunks[chunk] !== undefined) return this.drop("duplicate");
    this.descriptorReassembly ??= new Reassembly(DESCRIPTOR_REASSEMBLY);
    const object = this.descriptorReassembly.add(frame);
    if (object === undefined) return false;
    const data = verifyChunkObject(this.options.key, this.options.family, chunk, object);
    if (data === undefined) return this.drop("forged");
    chunks[chunk] = data.slice();
    this.chunksMissing--;
    return false;
  }

  /** Handles one frame; returns how many verified pages it completed. */
  private handleFrame(bytes: Uint8Array): number {
    const decoded = decodeFrame(bytes, this.options.family);
    if ("dropped" in decoded) return this.dropFrame(decoded.dropped);
    const { frame } = decoded;
    if (frame.type !== FrameType.REQUEST && frame.type !== FrameType.RATE) this.groupSequence.note(frame.sequence);
    if (frame.type === FrameType.DESCRIPTOR) {
      this.handleChunk(frame);
      return 0;
    }
    if (frame.type === FrameType.PAGES) return this.handlePages(frame);
    if (frame.type !== FrameType.PAGE) return this.dropFrame("unexpected"); // requests of siblings, our own looped back
    if (frame.object >= BigInt(this.options.pageCount)) return this.dropFrame("malformed");
    const page = Number(frame.object);
    const index = this.wanted?.get(page);
    if (this.has(page, index)) return this.dropFrame("duplicate");
    this.pageReassembly ??= new Reassembly(PAGE_REASSEMBLY);
    const object = this.pageReassembly.add(frame);
    if (object === undefined) return 0;
    return this.deliver(page, index, object, object.byteLength === PAGE_OBJECT_SIZE ? "forged" : "malformed") ? 1 : 0;
  }

  /** A PAGES frame: whole page objects for the pages from frame.object on, each checked on its own. */
  private handlePages(frame: Frame): number {
    const { payload } = frame;
    const count = payload.byteLength / PAGE_OBJECT_SIZE;
    if (frame.fragments !== 1 || !Number.isInteger(count) || count < 1 || frame.object + BigInt(count) > BigInt(this.options.pageCount))
      return this.dropFrame("malformed");
    let completed = 0;
    for (let i = 0, page = Number(frame.object); i < count; i++, page++) {
      const index = this.wanted?.get(page);
      if (this.has(page, index)) this.drop("duplicate");
      else if (this.deliver(page, index, payload.subarray(i * PAGE_OBJECT_SIZE, (i + 1) * PAGE_OBJECT_SIZE), "forged")) completed++;
    }
    return completed;
  }

  /** Whether `page` (at `index` in the current fetch, if it waits for it) was handed out already, or is in. */
  private has(page: number, index: number | undefined): boolean {
    return index === undefined ? this.delivered[page] === 1 : this.results[index] !== undefined;
  }

  /**
   * Checks `object`'s tag and hands the page to the current fetch (at `index`) or to onExtraPage;
   * false (counted as `refused`) if it is not the family's.
   */
  private deliver(page: number, index: number | undefined, object: Uint8Array, refused: string): boolean {
    const data = verifyPageObject(this.options.key, this.options.family, page, object);
    if (data === undefined) return this.drop(refused);
    this.delivered[page] = 1;
    if (index !== undefined) {
      this.results[index] = data.slice(); // data is a view of reassembly or receive memory
      this.missing--;
    } else {
      this.counters.pagesReceivedUnasked++;
      this.options.onExtraPage?.(page, data);
    }
    return true;
  }
}
