/**
 * The pager's end of a domain's paging ring (xen/include/public/io/ring.h's "back ring" over the
 * vm_event_sring_t page): Xen produces requests, the pager consumes them and produces responses.
 * Mechanical: indexes, slots and layouts only; what to answer is the pager's business.
 * Indexes are free-running u32 counters; a slot is index mod the ring's size.
 */
import { VM_EVENT_REASON_MEM_PAGING, type XenReleaseAbi } from "./abi.ts";
import { SnowflockError } from "../../errors.ts";

export interface PagingRequest {
  flags: number;
  reason: number;
  vcpuId: number;
  gfn: number;
  /** MEM_PAGING_DROP_PAGE and the like. */
  pagingFlags: number;
}

export interface PagingResponse {
  flags: number;
  vcpuId: number;
  gfn: number;
  pagingFlags: number;
}

const u32 = (n: number) => n >>> 0;

export class PagingRing {
  /** Slots in the ring: the largest power of two whose slots fit in the page after the header. */
  readonly slots: number;
  private requestsConsumed = 0;
  private responsesProduced = 0;
  private readonly ring;
  private readonly request;

  /** `page`: the mapped ring page. `fresh`: initialise it (SHARED_RING_INIT) before paging is enabled. */
  constructor(
    private readonly page: DataView,
    private readonly abi: XenReleaseAbi,
    fresh: boolean,
  ) {
    this.ring = abi.layouts.vm_event_sring;
    this.request = abi.layouts.vm_event_request;
    const fit = Math.floor((page.byteLength - this.ring.fields.ring.offset) / this.request.size);
    this.slots = 2 ** Math.floor(Math.log2(fit));
    if (fresh) {
      for (let i = 0; i < this.ring.fields.ring.offset; i += 4) page.setUint32(i, 0, true);
      this.set("req_event", 1);
      this.set("rsp_event", 1);
    } else {
      this.requestsConsumed = this.get("req_prod");
      this.responsesProduced = this.get("rsp_prod");
    }
  }

  /**
   * The requests Xen produced since the last call, oldest first. Before returning an empty list it
   * asks for an event on the next request and looks once more (RING_FINAL_CHECK_FOR_REQUESTS).
   */
  takeRequests(): PagingRequest[] {
    const taken: PagingRequest[] = [];
    for (;;) {
      const produced = this.get("req_prod");
      const waiting = u32(produced - this.requestsConsumed);
      if (waiting > this.slots)
        throw new SnowflockError("MEMORY", `the paging ring is corrupt: ${waiting} requests waiting in a ring of ${this.slots}`);
      for (let i = 0; i < waiting; i++) taken.push(this.readRequest(u32(this.requestsConsumed + i)));
      this.requestsConsumed = produced;
      this.set("req_event", u32(produced + 1));
      if (this.get("req_prod") === produced) return taken;
    }
  }

  /** Writes one response into the next slot; push() makes the written ones visible to Xen. */
  respond(response: PagingResponse): void {
    // A response answers a request taken (a foreign request, where no vCPU waits, gets none).
    if (this.responsesProduced === this.requestsConsumed) throw new SnowflockError("INTERNAL", "more paging responses than requests taken");
    const at = this.slotOffset(this.responsesProduced);
    const f = this.request.fields;
    for (let i = 0; i < this.request.size; i += 4) this.page.setUint32(at + i, 0, true);
    this.page.setUint32(at + f.version.offset, this.abi.constants.VM_EVENT_INTERFACE_VERSION, true);
    this.page.setUint32(at + f.flags.offset, response.flags, true);
    this.page.setUint32(at + f.reason.offset, VM_EVENT_REASON_MEM_PAGING, true);
    this.page.setUint32(at + f.vcpu_id.offset, response.vcpuId, true);
    this.page.setBigUint64(at + f["u.mem_paging.gfn"].offset, BigInt(response.gfn), true);
    this.page.setUint32(at + f["u.mem_paging.flags"].offset, response.pagingFlags, true);
    this.responsesProduced = u32(this.responsesProduced + 1);
  }

  /** Publishes the responses written so far (RING_PUSH_RESPONSES); the caller then notifies Xen's event channel. */
  push(): void {
    this.set("rsp_prod", this.responsesProduced);
  }

  private readRequest(index: number): PagingRequest {
    const at = this.slotOffset(index);
    const f = this.request.fields;
    return {
      flags: this.page.getUint32(at + f.flags.offset, true),
      reason: this.page.getUint32(at + f.reason.offset, true),
      vcpuId: this.page.getUint32(at + f.vcpu_id.offset, true),
      gfn: Number(this.page.getBigUint64(at + f["u.mem_paging.gfn"].offset, true)),
      pagingFlags: this.page.getUint32(at + f["u.mem_paging.flags"].offset, true),
    };
  }

  private slotOffset(index: number): number {
    return this.ring.fields.ring.offset + (index & (this.slots - 1)) * this.request.size;
  }

  private get(field: "req_prod" | "req_event" | "rsp_prod" | "rsp_event"): number {
    return this.page.getUint32(this.ring.fields[field].offset, true);
  }

  private set(field: "req_prod" | "req_event" | "rsp_prod" | "rsp_event", value: number): void {
    this.page.setUint32(this.ring.fields[field].offset, value, true);
  }
}
