/**
 * memtap's fault handler, in a Worker of its own so that a faulting vCPU never blocks it: it
 * reads page faults from the userfaultfd and has FaultService (fault-service.ts) resolve each one
 * into guest memory through the userfaultfd's ioctls. With mcdist, pages that siblings asked for
 * arrive unasked too; they are copied in at once, so the clone never faults on them (guest memory
 * itself is memtap's page cache). It never installs a page that failed validation; on any failure
 * it reports and leaves the faults pending until the owner has stopped the vCPUs and calls stop()
 * (see memtap.ts).
 */
import { SnowflockError } from "../errors.ts";
import { EAGAIN, EEXIST, EINTR, POLLIN, PROT_NONE } from "../sys/constants.ts";
import { SyscallError } from "../sys/errno.ts";
import { close } from "../sys/files.ts";
import { lastErrno, libc } from "../sys/libc.ts";
import { mprotect } from "../sys/memory.ts";
import { UFFD_EVENT_PAGEFAULT, UFFD_PAGEFAULT_FLAG_WRITE, uffd_msg, uffdCopy, uffdWake, uffdZeropage } from "../sys/uffd.ts";
import { PAGE_SIZE } from "../guest-memory/layout.ts";
import { FENCE_AFTER_MS, type MemtapEvent, type MemtapInit, type MemtapPrepare, UffdState } from "./memtap-protocol.ts";
import { prepareMcdistClient } from "../mcdist/client.ts";
import { pollRetrying, Woken } from "../sys/poll-retrying.ts";
import { FaultService, type PageSink } from "./fault-service.ts";
import { holdStartJit } from "../jit-policy.ts";
import { serveFaults } from "./fault-loop.ts";
import { openPageSource, type PageSource } from "./page-source.ts";

declare const self: Worker;

/** uffd messages read per read(2): several vCPUs can be waiting at once. */
const MAX_EVENTS = 64;
const ZEROS = new Uint8Array(PAGE_SIZE);

// A ready VMM's memtap Worker, made ahead, waits for its clone's start: see jit-policy.ts.
holdStartJit();

function post(event: MemtapEvent): void {
  self.postMessage(event);
}

/** Pages into guest memory through the userfaultfd. EEXIST: the page arrived meanwhile (e.g. a write fault after a zero-page read): just wake the waiter. */
class UffdSink implements PageSink {
  constructor(private readonly init: MemtapInit) {}

  install(page: number, data: Uint8Array): boolean {
    const address = this.address(page);
    return this.resolve(address, () => uffdCopy(this.init.uffd, address, data));
  }

  /** A read maps the shared zero page; a write gets its own zeroed page at once (no second fault). */
  zero(page: number, write: boolean): boolean {
    const address = this.address(page);
    return this.resolve(address, () =>
      write ? uffdCopy(this.init.uffd, address, ZEROS) : uffdZeropage(this.init.uffd, address, PAGE_SIZE),
    );
  }

  /**
   * Read-only zero pages in one ioctl; a later write copies one in the kernel, no fault here.
   * A page of the run already in place (an eager page, or one zero-filled alone before) ends the
   * ioctl there: EEXIST when it is the first, else EAGAIN after the pages before it were filled
   * (and their waiters woken). Either way the caller fills the run one page at a time.
   */
  zeroRun(page: number, count: number): boolean {
    try {
      uffdZeropage(this.init.uffd, this.address(page), count * PAGE_SIZE);
      return true;
    } catch (error) {
      if (!(error instanceof SyscallError && (error.errno === EEXIST || error.errno === EAGAIN))) throw error;
      return false;
    }
  }

  release(page: number): void {
    uffdWake(this.init.uffd, this.address(page), PAGE_SIZE);
  }

  private address(page: number): number {
    return this.init.address + page * PAGE_SIZE;
  }

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
}

class FaultHandler {
  private readonly events = new Uint8Array(MAX_EVENTS * uffd_msg.size);
  private readonly eventView = new DataView(this.events.buffer);
  private readonly pageCount: number;
  readonly service: FaultService;
  private source!: PageSource;

  constructor(private readonly init: MemtapInit) {
    this.pageCount = init.size / PAGE_SIZE;
    this.service = new FaultService({ ...init, pageCount: this.pageCount }, new UffdSink(init));
  }

  attach(source: PageSource): void {
    this.source = source;
    this.service.attach(source);
  }

  /** Serves faults until stop() (throws Woken) or a failure (throws it). */
  run(): never {
    return serveFaults({ faults: this.init.uffd, stop: this.init.stopFd, source: this.source.fd }, this.service, (events) => {
      if ((events & POLLIN) === 0) throw new SnowflockError("INTERNAL", `the userfaultfd reported poll events 0x${events.toString(16)}`);
      this.serveBatch();
    });
  }

  private serveBatch(): void {
    const n = libc.read(this.init.uffd, this.events, this.events.byteLength) as number;
    if (n < 0) {
      const errno = lastErrno();
      if (errno === EAGAIN || errno === EINTR) return; // another waiter was woken by the same copy
      throw new SyscallError("read", errno, "userfaultfd");
    }
    const started = performance.now();
    this.service.serve(this.collect(n), started);
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
  let source: PageSource | undefined;
  try {
    const handler = new FaultHandler(init);
    source = openPageSource({
      server: init.server,
      pageCount: init.size / PAGE_SIZE,
      timeoutMs: init.timeoutMs,
      wakeFd: init.stopFd,
      onExtraPage: (page, data) => handler.service.installArrived(page, data),
      preparedRing: init.preparedRing,
    });
    handler.attach(source);
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
    // Closing the uffd wakes every fault still waiting; they retry without it. The owner may be
    // waiting for this (memtap.ts release()) before it closes the VM, so it goes before the page
    // source: closing a packet socket waits for an RCU grace period (10-30 ms).
    if (Atomics.compareExchange(init.uffdClosed, 0, UffdState.OPEN, UffdState.CLAIMED) === UffdState.OPEN) {
      try {
        close(init.uffd);
      } catch {}
      Atomics.store(init.uffdClosed, 0, UffdState.CLOSED_BY_WORKER);
      Atomics.notify(init.uffdClosed, 0);
    }
    source?.close();
    post({ type: "stopped" });
  }
}

function stopRequested(init: MemtapInit): boolean {
  const [stop = 0] = pollRetrying([{ fd: init.stopFd, events: POLLIN }], 0);
  return stop !== 0;
}

self.onmessage = (event: MessageEvent<MemtapInit | MemtapPrepare>) => {
  if ("type" in event.data) prepareMcdistClient("pages");
  else run(event.data);
};
