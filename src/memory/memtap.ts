/**
 * The clone side of memory-on-demand. Guest memory starts empty and is registered with
 * userfaultfd; the pages the descriptor ships are copied in at once, and every other page is
 * filled on first touch by a fault Worker (memtap-worker.ts): zero pages locally, the rest fetched
 * from the parent's frozen image (on its host) or its memory server (on another).
 *
 * On failure (server gone, silent past the timeout, or a bad page) `failed` settles and the
 * faults stay pending, because a vCPU waiting on a page cannot be kicked out of KVM_RUN and must
 * never run on with a page it did not get. The owner then ends the VM in this order: tell the vCPUs
 * to stop (KvmMachine.stop(), which kicks them), then memtap.stop(), which closes the uffd so the
 * waiting faults return and the vCPUs see the stop before re-entering the guest.
 */
import { SnowflockError } from "../errors.ts";
import { O_CLOEXEC, O_NONBLOCK } from "../sys/constants.ts";
import { close } from "../sys/files.ts";
import {
  _UFFDIO_COPY,
  _UFFDIO_WAKE,
  _UFFDIO_ZEROPAGE,
  UFFDIO_REGISTER_MODE_MISSING,
  uffdApi,
  uffdCopy,
  uffdRegister,
  userfaultfd,
} from "../sys/uffd.ts";
import type { AllocationHints } from "../guest-memory/allocation-hints.ts";
import type { GuestMemory } from "../guest-memory/guest-memory.ts";
import { describePageServer, formatPageServer, type PageServerAddress } from "./page-server-address.ts";
import { PAGE_SIZE } from "../guest-memory/layout.ts";
import { type MemtapInit, type MemtapPrepare, UffdState } from "./memtap-protocol.ts";
import { faultCounters, type FaultStats, readFaultStats } from "./fault-counters.ts";
import { scaledTimeout } from "../timeouts.ts";
import { WorkerLink } from "../worker-link.ts";
import { closePreparedPacketRing, type PreparedPacketRing, preparePacketRing } from "../mcdist/transport.ts";

export interface MemtapOptions {
  memory: GuestMemory;
  /** Where the memory server is: a Unix socket on this host, or TCP on the parent's. */
  server: PageServerAddress;
  /** The pages to fetch (the descriptor's non-zero bitmap, less what heuristics spare): one bit per backing page. */
  nonZeroPages: Uint8Array;
  /** Pages that are zero-filled only because they were free (counted apart); one bit per backing page. */
  freePages?: Uint8Array;
  /** Fetch the pages after a fault along with it (window adapts to sequential faults). */
  prefetch?: boolean;
  /** Pages the guest's allocator handed out since the clone began (set by the vCPUs): zero-filled, never fetched. */
  allocationHints?: AllocationHints;
  /** Pages shipped with the descriptor (backing page number → contents), installed before any vCPU runs. */
  eagerPages: Map<number, Uint8Array>;
  /** How long one request may wait for the server before the clone fails. Default 5000 ms. */
  timeoutMs?: number;
}

export interface Memtap {
  stats(): FaultStats;
  /**
   * Closes the uffd now (faults still waiting are then filled by the kernel). Call it once the
   * vCPUs are stopped and before the VM's fd is closed: KVM waits there for page faults in flight,
   * which only a served or closed uffd ends.
   */
  release(): void;
  /** Settles with the reason if memtap fails; never settles otherwise. */
  failed: Promise<Error>;
  /** Closes the uffd and ends the Worker. Call once the VM has ended or its vCPUs were told to stop. */
  stop(): Promise<void>;
}

const DEFAULT_TIMEOUT_MS = scaledTimeout(5000);
const STOP_TIMEOUT_MS = scaledTimeout(3000);
/** Loading the Worker, on top of the server's own timeout for the Hello. */
const START_GRACE_MS = scaledTimeout(5000);

/** See VCPU_WORKER_URL in machine.ts: a compiled executable keeps the entry's path from the project root. */
const MEMTAP_WORKER_URL = import.meta.url.includes("/$bunfs/")
  ? new URL("./src/memory/memtap-worker.ts", import.meta.url).href
  : new URL("./memtap-worker.ts", import.meta.url).href;

/** A memtap Worker started ahead (a ready VMM of the pool): its module loaded before any fault. */
let spareWorker: Worker | undefined;
/** A packet socket and ring made ahead for mcdist (a ready VMM in a cluster): a clone over `packet` then skips a grace period. */
let spareRing: PreparedPacketRing | undefined;

/**
 * Starts the memtap Worker now, for the next startMemtap: a clone from the pool then skips loading
 * it. `mcdistOn`: the cluster interface, where the clone's pages may come by mcdist over packet:
 * its socket and ring, and the Worker's reassembly, are made now too.
 */
export function prestartMemtapWorker(mcdistOn?: string): void {
  spareWorker ??= new Worker(MEMTAP_WORKER_URL);
  if (mcdistOn === undefined) return;
  spareWorker.postMessage({ type: "prepare-mcdist" } satisfies MemtapPrepare);
  spareRing ??= preparePacketRing(mcdistOn);
}

/** Ends the Worker started ahead, if any (a clone without memory on demand needs none). */
export function dropSpareMemtapWorker(): void {
  spareWorker?.terminate();
  spareWorker = undefined;
}

/** The ring made ahead, for the memtap about to start: its transport takes it if it fits, else closes it. */
function takeRing(): PreparedPacketRing | undefined {
  const ring = spareRing;
  spareRing = undefined;
  return ring;
}

/** Closes the socket and ring made ahead, if no memtap took them. */
export function dropPreparedPacketRing(): void {
  if (spareRing) closePreparedPacketRing(spareRing);
  spareRing = undefined;
}

function takeWorker(): string | Worker {
  const worker = spareWorker ?? MEMTAP_WORKER_URL;
  spareWorker = undefined;
  return worker;
}

function checkInputs(options: MemtapOptions, pageCount: number): void {
  if (options.nonZeroPages.byteLength !== Math.ceil(pageCount / 8)) {
    throw new SnowflockError(
      "MEMORY",
      `the non-zero page bitmap has ${options.nonZeroPages.byteLength} bytes; ${pageCount} pages need ${Math.ceil(pageCount / 8)}`,
    );
  }
  for (const [page, data] of options.eagerPages) {
    if (!Number.isInteger(page) || page < 0 || page >= pageCount)
      throw new SnowflockError("MEMORY", `eager page ${page} is outside guest memory`);
    if (data.byteLength !== PAGE_SIZE) throw new SnowflockError("MEMORY", `eager page ${page} has ${data.byteLength} bytes`);
  }
}

/** A userfaultfd over all of `memory`, with the eager pages already in. */
function registerMemory(options: MemtapOptions): number {
  const { memory } = options;
  const uffd = userfaultfd(O_CLOEXEC | O_NONBLOCK);
  try {
    uffdApi(uffd, 0);
    const ioctls = uffdRegister(uffd, memory.address, memory.size, UFFDIO_REGISTER_MODE_MISSING);
    for (const needed of [_UFFDIO_COPY, _UFFDIO_ZEROPAGE, _UFFDIO_WAKE]) {
      if ((ioctls & (1n << BigInt(needed))) === 0n)
        throw new SnowflockError("MEMORY", `userfaultfd does not offer ioctl ${needed} on guest memory`);
    }
    for (const [page, data] of options.eagerPages) uffdCopy(uffd, memory.address + page * PAGE_SIZE, data);
    return uffd;
  } catch (error) {
    close(uffd);
    throw error;
  }
}

export async function startMemtap(options: MemtapOptions): Promise<Memtap> {
  const { memory } = options;
  const pageCount = memory.size / PAGE_SIZE;
  checkInputs(options, pageCount);
  const uffd = registerMemory(options);
  const counters = faultCounters();
  const link = new WorkerLink<object>(takeWorker(), "memtap");

  // The Worker closes the uffd when it stops; the owner closes it only if the Worker has not
  // claimed it after its chance (a stuck or terminated Worker).
  const uffdClosed = new Int32Array(new SharedArrayBuffer(4));
  const closeIfOpen = () => {
    if (Atomics.compareExchange(uffdClosed, 0, UffdState.OPEN, UffdState.CLOSED_BY_OWNER) === UffdState.OPEN) close(uffd);
  };
  const release = () => {
    link.askStop();
    for (const deadline = performance.now() + STOP_TIMEOUT_MS; performance.now() < deadline; ) {
      const state = Atomics.load(uffdClosed, 0);
      if (state !== UffdState.OPEN && state !== UffdState.CLAIMED) return;
      Atomics.wait(uffdClosed, 0, state, 50);
    }
    closeIfOpen();
  };
  const stop = () => link.finish(STOP_TIMEOUT_MS, closeIfOpen);

  const init: MemtapInit = {
    uffd,
    stopFd: link.stopFd,
    address: memory.address,
    size: memory.size,
    server: formatPageServer(options.server),
    nonZeroPages: options.nonZeroPages.slice(),
    freePages: options.freePages?.slice() ?? new Uint8Array(options.nonZeroPages.byteLength),
    prefetch: options.prefetch ?? false,
    allocationHints: options.allocationHints,
    timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    counters,
    uffdClosed,
    preparedRing: takeRing(),
  };
  link.worker.postMessage(init);
  const startLimit = init.timeoutMs + START_GRACE_MS;
  try {
    await link.whenReady(
      startLimit,
      `memtap did not connect to the memory server at ${describePageServer(options.server)} within ${startLimit} ms`,
    );
  } catch (error) {
    await stop();
    throw error;
  }

  return {
    failed: link.failed,
    stop,
    release,
    stats: () => readFaultStats(counters, options.eagerPages.size),
  };
}
