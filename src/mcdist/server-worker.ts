/**
 * The mcdist server's thread: a blocking poll loop that answers REQUEST frames by multicasting
 * each asked page (contents + GMAC tag, fragmented to the MTU; where the MTU fits several, pages
 * queued one after another go together in one PAGES frame) to the whole family, so one clone's
 * fault serves its siblings too. A page already queued, or sent since the requester could have
 * had it, is not sent again (send-log.ts): siblings faulting together, and clones retrying while
 * the queue is long, cost one send. A request flagged unicast is answered to its sender only (the
 * end game; raw frames only, see request()), unless a send to the group answers it. The queue
 * holds at most MAX_QUEUE_MS of sends at the paced rate. When receivers report the rate they keep
 * up with, sends are paced at the slowest recent one (never below MIN_PACED_RATE). Only REQUEST
 * and RATE frames tagged with the family key, and each once, are heard: a peer without the key
 * gets nothing sent and cannot slow the server.
 */
import { fstatSync } from "node:fs";
import { SnowflockError } from "../errors.ts";
import { PAGE_SIZE } from "../guest-memory/layout.ts";
import { pollRetrying } from "../sys/poll-retrying.ts";
import { MAP_SHARED, POLLIN, PROT_READ } from "../sys/constants.ts";
import { mmap, munmap, view } from "../sys/memory.ts";
import {
  decodeFrame,
  encodeFrame,
  payloadPerFrame,
  fragment,
  FrameType,
  GROUP_SEQUENCE_MASK,
  UNICAST_SEQUENCE,
  writeFrame,
} from "./frame.ts";
import { openControl } from "./control.ts";
import {
  DESCRIPTOR_CHUNK,
  decodeRate,
  decodeRequest,
  descriptorChunks,
  encodeChunkObject,
  MAX_REQUEST_PAGES,
  MessageError,
  MIN_PACED_RATE,
  PAGE_OBJECT_SIZE,
  type PageRequest,
  pageTag,
  RequestFlag,
  TAG_SIZE,
} from "./messages.ts";
import { ReplayWindows } from "./replay-window.ts";
import { MAX_SENDERS, RATE_REPORT_TTL_MS, type ServerEvent, type ServerInit, Slot } from "./server-protocol.ts";
import { type Destination, SendLog } from "./send-log.ts";
import { type Endpoint, openTransport, type Transport } from "./transport.ts";
import { scaledTimeout } from "../timeouts.ts";
import { WorkerCollector } from "../worker-collector.ts";

declare const self: Worker;

/** Sends waiting beyond this are refused (the clients retry): a request flood cannot grow memory. */
const MAX_QUEUE = 16384;
/** When paced, sends waiting longer than this at the paced rate are refused too: a request never waits for seconds. */
const MAX_QUEUE_MS = scaledTimeout(500);
/** An object sent longer ago than this is sent again for any request (see SendLog). */
const RESEND_AFTER_MS = scaledTimeout(100);
/**
 * How long a request may have been on its way (client's kernel, the link) before the socket was
 * found empty: a send this much before that moment may still cross the request (lockstep).
 */
const REQUEST_IN_FLIGHT_MS = scaledTimeout(5);
/**
 * A client's first ask for a page that went to the group less than this long ago is answered by
 * that send (lockstep: siblings that fault together, a page still crossing the link). Should the
 * client not get it after all, its retry (RETRY flag) is judged by the rule above alone.
 */
const FIRST_ASK_LOCKSTEP_MS = scaledTimeout(20);
/** Frames read per wake-up before sending again, so neither side starves the other. */
const RECEIVE_BATCH = 256;
const SEND_BATCH = 128;
/**
 * Token bucket depth when paced: PACING_BURST pages, or PACING_BURST_MS worth at the paced rate if
 * more. The poll waits whole milliseconds: a bucket holding less than that capped a fast receiver's
 * pace at 16 pages a millisecond, whatever rate it asked for.
 */
const PACING_BURST = 16;
const PACING_BURST_MS = 2;

function post(event: ServerEvent): void {
  self.postMessage(event);
}

interface Send {
  /** A page, or (descriptor) a chunk of the family's descriptor. */
  page: number;
  descriptor?: true;
  to: Destination;
  queuedAt: number;
}

class McdistServer {
  private readonly pageCount: number;
  private readonly pages: SendLog;
  private readonly chunks: SendLog;
  /** When the socket was last found empty: every request read since was sent after that. */
  private quietAt = -Infinity;
  private readonly tags: Uint8Array;
  private readonly tagged: Uint8Array;
  private readonly chunkCount: number;
  private readonly buffer = new Uint8Array(65536);
  /** Where a page's frame is written before it is sent (the kernel copies it at once). */
  private readonly frame: Uint8Array;
  /** Whole pages one frame carries (0: a page takes several). */
  private readonly pagesPerFrame: number;
  private queue: Send[] = [];
  private head = 0;
  /** Numbers of the objects sent to the group, one after another (frame.ts GROUP_SEQUENCE_MASK): a gap tells a client it lost some. */
  private groupSequence = 0;
  private unicastSequence = 0;
  /** The latest rate report of each sender. */
  private readonly rates = new Map<bigint, { rate: number; at: number }>();
  private readonly replay = new ReplayWindows(MAX_SENDERS);
  private tokens = PACING_BURST;
  private refilledAt = performance.now();

  constructor(
    private readonly init: ServerInit,
    private readonly image: Uint8Array,
    private readonly transport: Transport,
  ) {
    this.pageCount = init.size / PAGE_SIZE;
    this.frame = new Uint8Array(transport.maxFrame);
    this.pagesPerFrame = Math.floor(payloadPerFrame(transport.maxFrame) / PAGE_OBJECT_SIZE);
    this.pages = new SendLog(this.pageCount, RESEND_AFTER_MS);
    this.tags = new Uint8Array(this.pageCount * TAG_SIZE);
    this.tagged = new Uint8Array(this.pageCount);
    this.chunkCount = init.descriptor ? descriptorChunks(init.descriptor.byteLength) : 0;
    this.chunks = new SendLog(this.chunkCount, RESEND_AFTER_MS);
  }

  /** Serves until the stop fd fires. */
  run(): void {
    const watch = [
      { fd: this.transport.fd, events: POLLIN },
      { fd: this.init.stopFd, events: POLLIN },
    ];
    const collector = new WorkerCollector();
    for (;;) {
      const [, stop = 0] = pollRetrying(watch, this.pollTimeout());
      if (stop !== 0) return;
      collector.tick();
      // Read even when poll timed out: finding the socket empty after a send is what dates requests (quietAt).
      this.receiveSome();
      this.sendSome();
      if (this.head >= this.queue.length) this.receiveSome();
    }
  }

  private get c(): Float64Array {
    return this.init.counters;
  }

  private pollTimeout(): number {
    if (this.head >= this.queue.length) return -1;
    const rate = this.pacedRate(performance.now());
    if (rate === 0 || this.tokens >= 1) return 0;
    return Math.max(1, Math.ceil(((1 - this.tokens) * 1000) / rate));
  }

  private receiveSome(): void {
    const heardAfter = this.quietAt;
    for (let i = 0; i < RECEIVE_BATCH; i++) {
      const length = this.transport.receive(this.buffer);
      if (length === undefined) {
        this.quietAt = performance.now();
        return;
      }
      this.handle(this.buffer.subarray(0, length), heardAfter);
    }
  }

  private handle(bytes: Uint8Array, heardAfter: number): void {
    const decoded = decodeFrame(bytes, this.init.family);
    if ("dropped" in decoded) {
      this.c[decoded.dropped === "version" ? Slot.FRAMES_WRONG_VERSION : Slot.DROPPED_REQUESTS]!++;
      return;
    }
    const { frame } = decoded;
    // PAGE and DESCRIPTOR frames are for clients (our own, looped back, or another server's).
    if (frame.type !== FrameType.REQUEST && frame.type !== FrameType.RATE) return;
    const control = openControl(this.init.key, frame);
    if (control === undefined) return void this.c[Slot.REQUESTS_FORGED]!++;
    if (!this.replay.accept(control.sender, frame.sequence)) return void this.c[Slot.REQUESTS_REPLAYED]!++;
    try {
      if (frame.type === FrameType.REQUEST)
        this.request(
          decodeRequest(control.message, this.pageCount, this.chunkCount),
          this.transport.sender(),
          heardAfter - REQUEST_IN_FLIGHT_MS,
        );
      else {
        this.rates.set(control.sender, { rate: Math.max(MIN_PACED_RATE, decodeRate(control.message)), at: performance.now() });
        this.c[Slot.RATE_REPORTS]!++;
      }
    } catch (error) {
      if (!(error instanceof MessageError)) throw error;
      this.c[Slot.DROPPED_REQUESTS]!++;
    }
  }

  /** The most sends the queue takes now: MAX_QUEUE, and when paced, MAX_QUEUE_MS worth. */
  private queueCapacity(): number {
    const rate = this.pacedRate(performance.now());
    // At the slowest pace a whole request still fits beside another one waiting.
    return rate === 0 ? MAX_QUEUE : Math.min(MAX_QUEUE, Math.max(2 * MAX_REQUEST_PAGES, Math.floor((rate * MAX_QUEUE_MS) / 1000)));
  }

  /**
   * Queues a send of each asked page (or descriptor chunk) that no send queued or made since
   * answers. Only those count against the queue's capacity: a sibling asking for pages already
   * queued is not refused as "queue full" while the server is paced.
   */
  private request(request: PageRequest, from: Endpoint, heardAfter: number): void {
    const descriptor = (request.flags & RequestFlag.DESCRIPTOR) !== 0;
    const log = descriptor ? this.chunks : this.pages;
    // Over UDP every clone on a host shares the family's port, and a unicast datagram reaches one
    // socket of them only: there the end game is a multicast retry like any other.
    const unicast = (request.flags & RequestFlag.UNICAST) !== 0 && this.transport.kind === "packet";
    const to: Destination = unicast ? from : "group";
    const repeated = (request.flags & (RequestFlag.RETRY | RequestFlag.UNICAST)) !== 0;
    const now = performance.now();
    const sentSince = repeated ? heardAfter : Math.min(heardAfter, now - FIRST_ASK_LOCKSTEP_MS);
    const wanted = [...new Set(request.pages)].filter((page) => log.needsSend(page, to, now, sentSince, request.heardFrom));
    // A paced queue full of pages does not turn away a descriptor: see below.
    if (this.queue.length - this.head + wanted.length > (descriptor ? MAX_QUEUE : this.queueCapacity())) {
      this.c[Slot.DROPPED_REQUESTS]!++;
      return;
    }
    this.c[Slot.REQUESTS]!++;
    this.c[repeated ? Slot.DUPLICATES_SUPPRESSED : Slot.REQUESTS_COLLAPSED]! += request.pages.length - wanted.length;
    for (const page of wanted) log.queued(page, to);
    const sends = wanted.map((page): Send => ({ page, to, queuedAt: now, ...(descriptor ? { descriptor } : {}) }));
    if (descriptor) {
      // A clone waiting for its descriptor has not started yet: its chunks go before the pages of
      // siblings already running (behind the chunks queued before them), not a whole queue later.
      let at = this.head;
      while (at < this.queue.length && this.queue[at]!.descriptor) at++;
      this.queue.splice(at, 0, ...sends);
    } else this.queue.push(...sends);
    if (unicast && wanted.length > 0) this.c[Slot.UNICAST_REPLIES]!++;
  }

  /** The slowest rate reported recently (pages/s); 0 when nobody reported one. */
  private pacedRate(now: number): number {
    let slowest = 0;
    for (const [from, report] of this.rates) {
      if (now - report.at > RATE_REPORT_TTL_MS) this.rates.delete(from);
      else if (slowest === 0 || report.rate < slowest) slowest = report.rate;
    }
    this.c[Slot.PACED_RATE] = slowest;
    return slowest;
  }

  private sendSome(): void {
    const now = performance.now();
    const rate = this.pacedRate(now);
    if (rate > 0)
      this.tokens = Math.min(
        Math.max(PACING_BURST, (rate * PACING_BURST_MS) / 1000),
        this.tokens + ((now - this.refilledAt) * rate) / 1000,
      );
    this.refilledAt = now;
    for (let sent = 0; sent < SEND_BATCH; sent++) {
      this.skipAnswered();
      if (this.head >= this.queue.length) break;
      if (rate > 0) {
        if (this.tokens < 1) break;
        this.tokens--;
      }
      const next = this.queue[this.head++]!;
      if (next.descriptor) {
        this.sendChunk(next.page, next.to);
        if (this.chunks.sent(next.page, next.to, performance.now(), this.groupSequence)) this.c[Slot.PAGES_RESENT]!++;
        continue;
      }
      const pages = this.takeRun(next, rate > 0 ? Math.floor(this.tokens) + 1 : Infinity);
      if (rate > 0) this.tokens -= pages.length - 1;
      this.sendPages(pages, next.to);
      const now = performance.now();
      for (const page of pages) if (this.pages.sent(page, next.to, now, this.groupSequence)) this.c[Slot.PAGES_RESENT]!++;
    }
    if (this.head >= this.queue.length) {
      this.queue = [];
      this.head = 0;
    }
  }

  /** Drops the queued unicast sends at the head that a group send answered since they were queued. */
  private skipAnswered(): void {
    for (let next = this.queue[this.head]; next !== undefined && next.to !== "group"; next = this.queue[this.head]) {
      const log = next.descriptor ? this.chunks : this.pages;
      if (log.stillNeeded(next.page, next.to, next.queuedAt)) break;
      log.dequeued(next.page, next.to);
      this.c[Slot.DUPLICATES_SUPPRESSED]!++;
      this.head++;
    }
  }

  private tag(page: number, data: Uint8Array): Uint8Array {
    const at = page * TAG_SIZE;
    if (this.tagged[page] === 0) {
      this.tags.set(pageTag(this.init.key, this.init.family, page, data), at);
      this.tagged[page] = 1;
    }
    return this.tags.subarray(at, at + TAG_SIZE);
  }

  /** Sends one object (a tagged page or chunk) in as many frames as the MTU needs. */
  private sendObject(type: FrameType, number: number, object: Uint8Array, to: Destination): void {
    const sequence = this.nextSequence(to);
    for (const frame of fragment(type, this.init.family, sequence, BigInt(number), object, this.transport.maxFrame))
      this.sendFrame(encodeFrame(frame), to);
  }

  /** The sequence number of the next object sent to `to`: the group's count on by one; unicast sends carry UNICAST_SEQUENCE. */
  private nextSequence(to: Destination): number {
    if (to === "group") return (this.groupSequence = (this.groupSequence + 1) & GROUP_SEQUENCE_MASK);
    this.unicastSequence = (this.unicastSequence + 1) & GROUP_SEQUENCE_MASK;
    return (this.unicastSequence | UNICAST_SEQUENCE) >>> 0;
  }

  private sendFrame(bytes: Uint8Array, to: Destination): void {
    const c = this.c;
    try {
      this.transport.send(to, bytes);
      c[Slot.FRAMES_SENT]!++;
      c[Slot.BYTES_SENT]! += bytes.byteLength;
    } catch {
      c[Slot.SEND_ERRORS]!++;
    }
  }

  private sendChunk(chunk: number, to: Destination): void {
    const descriptor = this.init.descriptor!;
    const data = descriptor.subarray(chunk * DESCRIPTOR_CHUNK, (chunk + 1) * DESCRIPTOR_CHUNK);
    this.sendObject(FrameType.DESCRIPTOR, chunk, encodeChunkObject(this.init.key, this.init.family, chunk, data), to);
  }

  /**
   * `first` and the sends queued right behind it that a PAGES frame can carry along: the pages after
   * it, to the group, up to a frame's worth and at most `most` pages (the pacing tokens left).
   */
  private takeRun(first: Send, most: number): number[] {
    const pages = [first.page];
    if (first.to !== "group") return pages;
    const limit = Math.min(most, this.pagesPerFrame);
    for (let next = this.queue[this.head]; pages.length < limit && next !== undefined; next = this.queue[this.head]) {
      if (next.descriptor || next.to !== "group" || next.page !== first.page + pages.length) break;
      pages.push(next.page);
      this.head++;
    }
    return pages;
  }

  /** Sends pages (one after another from pages[0]): several in one PAGES frame, or one in a PAGE frame (fragmented if the MTU needs it). */
  private sendPages(pages: number[], to: Destination): void {
    const parts: Uint8Array[] = [];
    for (const page of pages) {
      const data = this.image.subarray(page * PAGE_SIZE, (page + 1) * PAGE_SIZE);
      parts.push(data, this.tag(page, data));
    }
    this.c[Slot.PAGES_SENT]! += pages.length;
    if (this.pagesPerFrame >= 1) {
      // Written straight into the frame buffer (one copy of each page).
      const header = {
        type: pages.length > 1 ? FrameType.PAGES : FrameType.PAGE,
        family: this.init.family,
        sequence: this.nextSequence(to),
        object: BigInt(pages[0]!),
        fragment: 0,
        fragments: 1,
      };
      this.sendFrame(writeFrame(this.frame, header, parts), to);
      return;
    }
    const object = new Uint8Array(PAGE_OBJECT_SIZE);
    object.set(parts[0]!);
    object.set(parts[1]!, PAGE_SIZE);
    this.sendObject(FrameType.PAGE, pages[0]!, object, to);
  }
}

function run(init: ServerInit): void {
  let address = 0;
  let transport: Transport | undefined;
  try {
    const size = fstatSync(init.imageFd).size;
    if (size < init.size)
      throw new SnowflockError(
        "MEMORY",
        `the memory image (fd ${init.imageFd}) has ${size} bytes; the mcdist server was asked to serve ${init.size}`,
      );
    address = mmap(0, init.size, PROT_READ, MAP_SHARED, init.imageFd, 0);
    // It reads only requests and rate reports, frame by frame: no ring to wait for while the parent forks.
    transport = openTransport(init.transport, { family: init.family, mtu: init.mtu, joinGroup: false, ring: false });
    post({ type: "ready", endpoint: { kind: transport.kind, address: transport.localEndpoint } });
    new McdistServer(init, view(address, init.size), transport).run();
  } catch (error) {
    const message = error instanceof SnowflockError ? error.message : `the mcdist server failed: ${(error as Error).message}`;
    post({ type: "failed", message });
  } finally {
    try {
      transport?.close();
    } catch {}
    if (address !== 0) munmap(address, init.size);
    post({ type: "stopped" });
  }
}

self.onmessage = (event: MessageEvent<ServerInit>) => run(event.data);
