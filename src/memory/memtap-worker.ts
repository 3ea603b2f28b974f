/**
 * memtap's fault handler, in a Worker of its own so that a faulting vCPU never blocks it: it
 * reads page faults from the userfaultfd and resolves each one — a page the bitmap calls zero
 * is zero-filled, any other is fetched from the memory server and copied in. With mcdist, pages
 * that siblings asked for arrive unasked too; they are copied in at once, so the clone never
 * faults on them (guest memory itself is memtap's page cache). It never installs a page that
 * failed validation; on any failure it reports and leaves the faults pending until the owner has
 * stopped the vCPUs and calls stop() (see memtap.ts).
 */
import { isAllocated } from "../guest-memory/allocation-hints.ts";
import { SnowflockError } from "../errors.ts";
import { EAGAIN, EEXIST, EINTR, POLLIN, PROT_NONE } from "../sys/constants.ts";
import { SyscallError } from "../sys/errno.ts";
import { close } from "../sys/files.ts";
import { lastErrno, libc } from "../sys/libc.ts";
import { mprotect } from "../sys/memory.ts";
import { UFFD_EVENT_PAGEFAULT, UFFD_PAGEFAULT_FLAG_WRITE, uffd_msg, uffdCopy, uffdWake, uffdZeropage } from "../sys/uffd.ts";
import { PAGE_SIZE } from "../guest-memory/layout.ts";
import { FENCE_AFTER_MS, HISTOGRAM_BUCKETS, type MemtapEvent, type MemtapInit, Slot, UffdState } from "./memtap-protocol.ts";
import { pollRetrying, Woken } from "../sys/poll-retrying.ts";
import { PageClient } from "./page-client.ts";
import { McdistClient } from "../mcdist/client.ts";
import { parsePageServer } from "./page-server-address.ts";
import { WorkerCollector } from "../worker-collector.ts";
import { HEADER_SIZE, MAX_PAGES_PER_REQUEST, pageDataSize } from "./page-protocol.ts";

declare const self: Worker;

/** uffd messages read per read(2): several vCPUs can be waiting at once. */
const MAX_EVENTS = 64;
const ZEROS = new Uint8Array(PAGE_SIZE);
/** Most pages prefetched after one fault. */
const MAX_PREFETCH_WINDOW = 32;
/** Most pages zero-filled by one fault on a page the clone fills itself. */
const MAX_ZERO_RUN = 512;

function post(event: MemtapEvent): void {
  self.postMessage(event);
}

/** Where faulting pages come from: the parent's memory server (one connection) or mcdist. */
interface PageSource {
  /** Polled while no fault waits. */
  readonly fd: number;
  fetch(pages: number[]): Uint8Array[];
  /** `fd` turned readable while idle. */
  idle(): void;
  /** Bytes received so far, when the source counts them itself (mcdist's frames). */
  bytesReceived?(): number;
  /** Frames refused as corrupted, malformed or forged (mcdist). */
  framesRejected?(): number;
  /** Requests asked again because their pages did not come in time (mcdist). */
  retries?(): number;
  close(): void;
}

/** How often frames read while idle are added to the shared counters (a fetch and the stop always add them). */
const COUNT_EVERY_MS = 100;

const NORMAL_DROPS = new Set(["family", "duplicate", "unexpected", "evicted", "behind"]);

class McdistSource implements PageSource {
  readonly fd: number;
  constructor(private readonly client: McdistClient) {
    this.fd = client.fd;
  }
  fetch(pages: number[]): Uint8Array[] {
    return this.client.fetch(pages);
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
  close(): void {
    this.client.close();
  }
}

function openSource(init: MemtapInit, onExtraPage: (page: number, data: Uint8Array) => void): PageSource {
  const server = parsePageServer(init.server);
  const pageCount = init.size / PAGE_SIZE;
  if (server.kind !== "mcdist") return PageClient.connect(server, { timeoutMs: init.timeoutMs, wakeFd: init.stopFd, pageCount });
  if (!server.transport) throw new SnowflockError("MEMORY", "an mcdist memory source needs this host's transport (interface)");
  const client = McdistClient.open({
    transport: server.transport,
    server: server.server,
    family: server.family,
    key: server.key,
    pageCount,
    mtu: server.mtu,
    timeoutMs: init.timeoutMs,
    wakeFd: init.stopFd,
    onExtraPage,
    ratePagesPerSecond: "measured",
  });
  return new McdistSource(client);
}

class FaultHandler {
  private readonly events = new Uint8Array(MAX_EVENTS * uffd_msg.size);
  private readonly eventView = new DataView(this.events.buffer);
  private readonly pageCount: number;
  /** Pages copied in unasked (mcdist): a fault read before they arrived only needs a wake. */
  private readonly arrived: Uint8Array;
  private client!: PageSource;
  private lastFault = -2;
  private window = 0;

  constructor(private readonly init: MemtapInit) {
    this.pageCount = init.size / PAGE_SIZE;
    this.arrived = new Uint8Array(this.pageCount);
  }

  attach(source: PageSource): void {
    this.client = source;
  }

  /** A page a sibling asked for: copy it in now, unless this clone has it already. */
  installArrived(page: number, data: Uint8Array): void {
    if (page < 0 || page >= this.pageCount || this.arrived[page] === 1) return;
    this.arrived[page] = 1;
    const address = this.init.address + page * PAGE_SIZE;
    try {
      uffdCopy(this.init.uffd, address, data);
      this.init.counters[Slot.PAGES_MULTICAST]!++;
    } catch (error) {
      // EEXIST: the clone had it (fetched, zero-filled or written); its own copy stands.
      if (!(error instanceof SyscallError && error.errno === EEXIST)) throw error;
    }
  }

  /** Serves faults until stop() (throws Woken) or a failure (throws it). */
  run(): never {
    const watch = [
      { fd: this.init.uffd, events: POLLIN },
      { fd: this.init.stopFd, events: POLLIN },
      { fd: this.client.fd, events: POLLIN },
    ];
    const collector = new WorkerCollector();
    let countedAt = 0;
    try {
      for (;;) {
        const [faults = 0, stop = 0, server = 0] = pollRetrying(watch, -1);
        if (stop !== 0) throw new Woken("stop requested");
        collector.tick();
        if (server !== 0) {
          this.client.idle();
          // Frames wake this loop one or a few at a time: the counters are refreshed now and then, not per wake.
          if (Date.now() - countedAt >= COUNT_EVERY_MS) {
            this.countBytes();
            countedAt = Date.now();
          }
        }
        if ((faults & POLLIN) !== 0) this.serveBatch();
        else if (faults !== 0) throw new SnowflockError("INTERNAL", `the userfaultfd reported poll events 0x${faults.toString(16)}`);
      }
    } finally {
      this.countBytes();
    }
  }

  private serveBatch(): void {
    const n = libc.read(this.init.uffd, this.events, this.events.byteLength) as number;
    if (n < 0) {
      const errno = lastErrno();
      if (errno === EAGAIN || errno === EINTR) return; // another waiter was woken by the same copy
      throw new SyscallError("read", errno, "userfaultfd");
    }
    const started = performance.now();
    const faults = this.collect(n);
    const fetch: number[] = [];
    for (const [page, write] of faults) {
      if (this.arrived[page] === 1) uffdWake(this.init.uffd, this.init.address + page * PAGE_SIZE, PAGE_SIZE);
      else if (this.mayBeNonZero(page) && this.handedOut(page)) this.zeroFill(page, write, Slot.PAGES_ALLOCATION_FILLED);
      else if (this.mayBeNonZero(page)) fetch.push(page);
      else if (this.init.prefetch) this.zeroFillRun(page, write);
      else this.zeroFill(page, write);
    }
    const prefetched = this.init.prefetch ? this.prefetchAround(fetch) : [];
    const all = [...fetch, ...prefetched];
    for (let i = 0; i < all.length; i += MAX_PAGES_PER_REQUEST) this.fetchAndInstall(all.slice(i, i + MAX_PAGES_PER_REQUEST));
    this.init.counters[Slot.PAGES_PREFETCHED]! += prefetched.length;
    this.record(faults.size, (performance.now() - started) * 1000);
  }

  /** Faulting pages of this batch (two vCPUs on one page count once), and whether any wrote. */
  private collect(bytes: number): Map<number, boolean> {
    const faults = new Map<number, boolean>();
    const view = this.eventView;
    for (let at = 0; at + uffd_msg.size <= bytes; at += uffd_msg.size) {
      if (view.getUint8(at) !== UFFD_EVENT_PAGEFAULT) continue;
      const flags = view.getUint32(at + uffd_msg.fields["arg.pagefault.flags"].offset, true);
      const addressAt = at + uffd_msg.fields["arg.pagefault.address"].offset;
      const address = view.getUint32(addressAt, true) + view.getUint32(addressAt + 4, true) * 2 ** 32;
      const page = Math.floor((address - this.init.address) / PAGE_SIZE);
      if (page < 0 || page >= this.pageCount)
        throw new SnowflockError("INTERNAL", `fault at 0x${address.toString(16)} is outside guest memory`);
      faults.set(page, (faults.get(page) ?? false) || (flags & UFFD_PAGEFAULT_FLAG_WRITE) !== 0);
    }
    return faults;
  }

  /**
   * Prefetch: pages after a fetched fault that the clone would fetch too, asked for in the same
   * round. The window doubles while faults stay sequential (each one within reach of the last)
   * and closes on a fault elsewhere.
   */
  private prefetchAround(fetch: number[]): number[] {
    const taken = new Set(fetch);
    const extra: number[] = [];
    for (const page of fetch) {
      const sequential = page > this.lastFault && page <= this.lastFault + this.window + 1;
      this.window = sequential ? Math.min(MAX_PREFETCH_WINDOW, Math.max(1, this.window * 2)) : 0;
      this.lastFault = page;
      for (let next = page + 1; next <= page + this.window && next < this.pageCount; next++) {
        if (taken.has(next) || this.arrived[next] === 1 || !this.mayBeNonZero(next) || this.handedOut(next)) continue;
        taken.add(next);
        extra.push(next);
      }
      // Where the window reached: a fault there is still "sequential".
      if (this.window > 0) this.lastFault = page + this.window;
    }
    return extra;
  }

  private mayBeNonZero(page: number): boolean {
    return ((this.init.nonZeroPages[page >> 3]! >> (page & 7)) & 1) !== 0;
  }

  /** Whether the guest's allocator handed the page out since the clone began (allocation-hints). */
  private handedOut(page: number): boolean {
    return this.init.allocationHints !== undefined && isAllocated(this.init.allocationHints, page);
  }

  /**
   * A read maps the shared zero page; a write gets its own zeroed page at once (no second fault).
   * `because` counts a page the plan would have fetched but for a heuristic of the moment.
   */
  private zeroFill(page: number, write: boolean, because?: number): void {
    const address = this.init.address + page * PAGE_SIZE;
    if (!this.resolve(address, () => (write ? uffdCopy(this.init.uffd, address, ZEROS) : uffdZeropage(this.init.uffd, address, PAGE_SIZE))))
      return;
    this.countZeroFilled(page);
    if (because !== undefined) this.init.counters[because]!++;
  }

  private countZeroFilled(page: number): void {
    this.init.counters[Slot.PAGES_ZERO_FILLED]!++;
    if ((this.init.freePages[page >> 3]! >> (page & 7)) & 1) this.init.counters[Slot.PAGES_FREE_FILLED]!++;
  }

  /**
   * With prefetch: a fault on a page the clone fills itself fills the run of such pages after it
   * in one ioctl (read-only zero pages; a later write copies one in the kernel, no fault here).
   */
  private zeroFillRun(page: number, write: boolean): void {
    let run = 1;
    while (run < MAX_ZERO_RUN && page + run < this.pageCount && !this.mayBeNonZero(page + run) && this.arrived[page + run] !== 1) run++;
    if (run === 1) return this.zeroFill(page, write);
    try {
      uffdZeropage(this.init.uffd, this.init.address + page * PAGE_SIZE, run * PAGE_SIZE);
    } catch (error) {
      if (!(error instanceof SyscallError && error.errno === EEXIST)) throw error;
      // Some page of the run was there already: the rest one by one.
      for (let p = page; p < page + run; p++) this.zeroFill(p, false);
      return;
    }
    for (let p = page; p < page + run; p++) this.countZeroFilled(p);
  }

  private fetchAndInstall(pages: number[]): void {
    const contents = this.client.fetch(pages);
    const c = this.init.counters;
    c[Slot.REQUESTS]!++;
    if (this.client.bytesReceived) this.countBytes();
    else c[Slot.BYTES_RECEIVED]! += HEADER_SIZE + pageDataSize(pages.length);
    pages.forEach((page, i) => {
      const address = this.init.address + page * PAGE_SIZE;
      this.arrived[page] = 1;
      this.resolve(address, () => uffdCopy(this.init.uffd, address, contents[i]!));
    });
    c[Slot.PAGES_FETCHED]! += pages.length;
  }

  private countBytes(): void {
    if (this.client.bytesReceived) this.init.counters[Slot.BYTES_RECEIVED] = this.client.bytesReceived();
    if (this.client.framesRejected) this.init.counters[Slot.FRAMES_REJECTED] = this.client.framesRejected();
    if (this.client.retries) this.init.counters[Slot.RETRIES] = this.client.retries();
  }

  /** EEXIST: the page arrived meanwhile (e.g. a write fault after a zero-page read); just wake the waiter. */
  private resolve(address: number, install: () => number): boolean {
    try {
      install();
      return true;
    } catch (error) {
      if (!(error instanceof SyscallError && error.errno === EEXIST)) throw error;
      uffdWake(this.init.uffd, address, PAGE_SIZE);
      return false;
    }
  }

  private record(faults: number, micros: number): void {
    const c = this.init.counters;
    c[Slot.FAULTS]! += faults;
    c[Slot.SERVICE_MICROS]! += micros * faults;
    const bucket = micros < 1 ? 0 : Math.min(HISTOGRAM_BUCKETS - 1, Math.floor(Math.log2(micros)) + 1);
    c[Slot.HISTOGRAM + bucket]! += faults;
  }
}

/**
 * After a failure, faults stay pending (a vCPU waiting on one cannot be kicked out of KVM_RUN) until
 * the owner has told the vCPUs to stop and calls stop(). If it never does, fence guest memory
 * (PROT_NONE) before the uffd closes, so the waiting vCPUs fail their access instead of running on
 * with zero-filled pages.
 */
function awaitStopOrFence(init: MemtapInit): void {
  const deadline = performance.now() + FENCE_AFTER_MS;
  for (let left = FENCE_AFTER_MS; left > 0; left = deadline - performance.now()) {
    const [stop = 0] = pollRetrying([{ fd: init.stopFd, events: POLLIN }], Math.ceil(left));
    if (stop !== 0) return;
  }
  try {
    mprotect(init.address, init.size, PROT_NONE);
  } catch {} // already unmapped: nothing left to protect
}

function run(init: MemtapInit): void {
  let client: PageSource | undefined;
  try {
    const handler = new FaultHandler(init);
    client = openSource(init, (page, data) => handler.installArrived(page, data));
    handler.attach(client);
    post({ type: "ready" });
    handler.run();
  } catch (error) {
    // Once stop was asked for, the owner may already have closed the uffd: nothing failed.
    if (!(error instanceof Woken) && !stopRequested(init)) {
      const message = error instanceof SnowflockError ? error.message : `memtap failed: ${(error as Error).message}`;
      post({ type: "failed", message });
      awaitStopOrFence(init);
    }
  } finally {
    client?.close();
    // Closing the uffd wakes every fault still waiting; they retry without it. The owner may be
    // waiting for this (memtap.ts release()) before it closes the VM.
    if (Atomics.compareExchange(init.uffdClosed, 0, UffdState.OPEN, UffdState.CLAIMED) === UffdState.OPEN) {
      try {
        close(init.uffd);
      } catch {}
      Atomics.store(init.uffdClosed, 0, UffdState.CLOSED_BY_WORKER);
      Atomics.notify(init.uffdClosed, 0);
    }
    post({ type: "stopped" });
  }
}

function stopRequested(init: MemtapInit): boolean {
  const [stop = 0] = pollRetrying([{ fd: init.stopFd, events: POLLIN }], 0);
  return stop !== 0;
}

self.onmessage = (event: MessageEvent<MemtapInit>) => run(event.data);
