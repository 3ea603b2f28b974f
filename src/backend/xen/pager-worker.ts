/**
 * The Xen pager, one Worker per clone domain: it becomes the domain's pager on Xen's paging ring
 * (vm_event), pages out the domain's RAM (the clone shell), and later serves every fault: each
 * request on the ring is handed to FaultService (src/memory/fault-service.ts, as memtap's are on
 * KVM), whose pages go in with xc_mem_paging_load, then answered so that Xen unpauses the vCPU.
 * It never maps an absent page of its own domain (dom0 would wait on itself). On a failure it
 * reports and stops answering: the faulting vCPUs stay paused, the domain never runs on with a
 * page it did not get, and the owner destroys it.
 */
import { toArrayBuffer } from "bun:ffi";
import { SnowflockError } from "../../errors.ts";
import { ENOENT, PROT_READ, PROT_WRITE } from "../../sys/constants.ts";
import { errnoName, SyscallError } from "../../sys/errno.ts";
import { Woken } from "../../sys/poll-retrying.ts";
import { FaultService, type PageSink } from "../../memory/fault-service.ts";
import { serveFaults } from "../../memory/fault-loop.ts";
import { openPageSource, type PageSource } from "../../memory/page-source.ts";
import { fetchEach, inRequests } from "../../memory/page-requests.ts";
import {
  HVM_PARAM_PAGING_RING_PFN,
  MEM_PAGING_DROP_PAGE,
  VM_EVENT_FLAG_VCPU_PAUSED,
  VM_EVENT_REASON_MEM_PAGING,
  XC_PAGE_SIZE,
} from "./abi.ts";
import type { EventChannel } from "./event-channel.ts";
import { type ForeignMapping, type ForeignMemory, withMapped } from "./foreign-memory.ts";
import { openXen, type XenHost } from "./host.ts";
import type { PagerAttach, PagerAttached, PagerCommand, PagerEvent, PagerNote, PagerServe } from "./pager-protocol.ts";
import { PagingRing } from "./paging-ring.ts";
import { hasPage } from "../../guest-memory/page-bits.ts";

declare const self: Worker;

const ZEROS = new Uint8Array(XC_PAGE_SIZE);
const PROGRESS_EVERY = 4096;

const post = (event: PagerEvent) => self.postMessage(event);
const note = (value: PagerNote) => post({ type: "note", note: value });

/** Why Xen refused to make us the pager, in words an operator can act on. */
function enableError(domid: number, error: unknown): Error {
  if (!(error instanceof SyscallError)) return error as Error;
  const why: Record<string, string> = {
    ENOSYS: "this Xen is built without memory paging (CONFIG_MEM_PAGING)",
    EBUSY: "another pager is attached to it already",
    EXDEV: "it uses populate-on-demand (give it memory = maxmem)",
    ENODEV: "it runs without hardware-assisted paging (HAP)",
    EMLINK: "it has a passed-through device (IOMMU)",
    EOPNOTSUPP: "Xen refuses paging here (a PVH dom0, or no paging ring page)",
  };
  const reason = why[errnoName(error.errno)] ?? errnoName(error.errno);
  return new SnowflockError("MEMORY", `Xen would not page domain ${domid}: ${reason}`);
}

/** Pages in with xc_mem_paging_load; ENOENT: the page is in already (loaded or never paged out). */
class PagingSink implements PageSink {
  constructor(
    private readonly host: XenHost,
    private readonly domid: number,
  ) {}
  install(page: number, data: Uint8Array): boolean {
    const errno = this.host.pagingLoad(this.domid, page, data);
    if (errno === 0) return true;
    if (errno === ENOENT) return false;
    throw new SyscallError("xc_mem_paging_load", errno, `domain ${this.domid} frame 0x${page.toString(16)}`);
  }
  zero(page: number): boolean {
    return this.install(page, ZEROS);
  }
  /**
   * A run of zero pages in one fault (xc_mem_paging_load takes pages nobody asked for yet). A
   * frame Xen kept present is skipped rather than failing the run: the run then counts it too
   * (a handful of frames per shell).
   */
  zeroRun(page: number, count: number): boolean {
    for (let p = page; p < page + count; p++) this.install(p, ZEROS);
    return true;
  }
  release(): void {
    // Xen lets the vCPU go on when the pager answers the request, which it does after every batch.
  }
}

class Pager {
  private readonly host = openXen();
  private memory: ForeignMemory | undefined;
  private ringMapping: ForeignMapping | undefined;
  private channel: EventChannel | undefined;
  private ring: PagingRing | undefined;
  private source: PageSource | undefined;
  private attached: PagerAttach | undefined;
  private present: number[] = [];

  attach(command: PagerAttach): PagerAttached {
    this.attached = command;
    const { domid, ramPages } = command;
    const host = this.host;
    const ringFrame = Number(host.hvmParam(domid, HVM_PARAM_PAGING_RING_PFN));
    if (ringFrame === 0) throw new SnowflockError("MEMORY", `domain ${domid} has no paging ring page (HVM_PARAM_PAGING_RING_PFN)`);
    this.memory = host.foreignMemory();
    this.ringMapping = this.memory.map(domid, PROT_READ | PROT_WRITE, new BigUint64Array([BigInt(ringFrame)]));
    if (this.ringMapping.errors[0] !== 0)
      throw new SyscallError(
        "xenforeignmemory_map",
        -this.ringMapping.errors[0]!,
        `domain ${domid} paging ring frame 0x${ringFrame.toString(16)}`,
      );
    let port: number;
    try {
      port = host.pagingEnable(domid);
    } catch (error) {
      throw enableError(domid, error);
    }
    this.channel = host.eventChannel(domid, port);
    this.ring = new PagingRing(new DataView(toArrayBuffer(this.ringMapping.address as never, 0, XC_PAGE_SIZE)), host.abi, true);
    // The guest must not see (or write) the ring: it leaves its physmap.
    host.decreaseReservation(domid, [ringFrame]);

    const started = performance.now();
    let pagedOut = 0;
    for (let frame = 0; frame < ramPages; frame++) {
      if (host.pagingEvict(domid, frame) === 0) pagedOut++;
      else this.present.push(frame);
      if ((frame + 1) % PROGRESS_EVERY === 0) note({ kind: "progress", done: frame + 1, total: ramPages });
    }
    return { pagedOut, present: this.present, evictMs: performance.now() - started };
  }

  serve(plan: PagerServe): never {
    const attached = this.attached;
    if (!attached) throw new SnowflockError("INTERNAL", "the pager was asked to serve before it was attached");
    const { domid, ramPages, counters } = attached;
    const service = new FaultService(
      {
        pageCount: ramPages,
        nonZeroPages: plan.nonZeroPages,
        freePages: plan.freePages,
        prefetch: plan.prefetch,
        allocationHints: undefined,
        counters,
      },
      new PagingSink(this.host, domid),
    );
    this.source = openPageSource({
      server: plan.server,
      pageCount: ramPages,
      timeoutMs: plan.timeoutMs,
      wakeFd: attached.stopFd,
      onExtraPage: (page, data) => service.installArrived(page, data),
    });
    service.attach(this.source);
    const loadStarted = performance.now();
    service.preload(plan.eagerFrames);
    this.writePresent(plan);
    note({ kind: "serving", loadMs: performance.now() - loadStarted });
    return this.loop(service, attached);
  }

  /** Frames Xen kept present in the shell get the image's contents through a mapping (they are present: no fault). */
  private writePresent(plan: PagerServe): void {
    if (this.present.length === 0) return;
    const { domid } = this.attached!;
    const nonZero = this.present.filter((f) => hasPage(plan.nonZeroPages, f));
    const contents = new Map<number, Uint8Array>();
    // Copied: a memory server's answers are views of its client's buffer, valid until the next.
    fetchEach(this.source!, inRequests(nonZero), (batch, data) => data.forEach((page, k) => contents.set(batch[k]!, page.slice())));
    withMapped(this.memory!, domid, PROT_WRITE | PROT_READ, new BigUint64Array(this.present.map(BigInt)), (target, errors) => {
      this.present.forEach((frame, i) => {
        if (errors[i] !== 0) throw new SyscallError("xenforeignmemory_map", -errors[i]!, `domain ${domid} frame 0x${frame.toString(16)}`);
        target.set(contents.get(frame) ?? ZEROS, i * XC_PAGE_SIZE);
      });
    });
  }

  private loop(service: FaultService, attached: PagerAttach): never {
    return serveFaults({ faults: this.channel!.fd, stop: attached.stopFd, source: this.source!.fd }, service, () =>
      this.serveRing(service, attached),
    );
  }

  /** The event channel fired: every request on the ring is served, then answered. */
  private serveRing(service: FaultService, attached: PagerAttach): void {
    const channel = this.channel!;
    const ring = this.ring!;
    channel.acknowledge();
    const started = performance.now();
    const requests = ring.takeRequests();
    const faults = new Map<number, boolean>();
    for (const request of requests) {
      if (request.reason !== VM_EVENT_REASON_MEM_PAGING || (request.pagingFlags & MEM_PAGING_DROP_PAGE) !== 0) continue;
      if (request.gfn >= attached.ramPages)
        throw new SnowflockError(
          "MEMORY",
          `domain ${attached.domid} faulted on frame 0x${request.gfn.toString(16)}, beyond the ${attached.ramPages} frames it was given`,
        );
      faults.set(request.gfn, true);
    }
    if (faults.size > 0) service.serve(faults, started);
    let answered = 0;
    for (const request of requests) {
      if ((request.flags & VM_EVENT_FLAG_VCPU_PAUSED) === 0) continue;
      ring.respond({
        flags: VM_EVENT_FLAG_VCPU_PAUSED,
        vcpuId: request.vcpuId,
        gfn: request.gfn,
        pagingFlags: request.pagingFlags & MEM_PAGING_DROP_PAGE,
      });
      answered++;
    }
    if (answered > 0) {
      ring.push();
      channel.notify();
    }
  }

  close(): void {
    this.source?.close();
    this.channel?.close();
    if (this.ringMapping) this.memory?.unmap(this.ringMapping);
    this.memory?.close();
    this.host.close();
  }
}

let pager: Pager | undefined;

self.onmessage = (event: MessageEvent<PagerCommand>) => {
  const command = event.data;
  try {
    if (command.kind === "attach") {
      pager = new Pager();
      post({ type: "ready", ...pager.attach(command) });
      return;
    }
    if (command.kind === "stop") {
      // Attached, not serving: nothing waits on the stop eventfd, so the message ends it (its ring mapping with it).
      pager?.close();
      pager = undefined;
      post({ type: "stopped" });
      return;
    }
    if (!pager) throw new SnowflockError("INTERNAL", "the pager was asked to serve before it was attached");
    pager.serve(command);
  } catch (error) {
    if (!(error instanceof Woken)) {
      const message = error instanceof SnowflockError ? error.message : `the Xen pager failed: ${(error as Error).message}`;
      post({ type: "failed", message });
    }
    pager?.close();
    pager = undefined;
    post({ type: "stopped" });
  }
};
