/**
 * The pager's end of the paging ring (src/backend/xen/paging-ring.ts) against Xen's end played
 * here as io/ring.h's front ring does it: requests into slot (index mod size), then req_prod;
 * responses read back from rsp_prod. The layouts are abi.ts's, which xen-abi.test.ts checks
 * against libxen-dev's headers. (The real ring, with Xen on the other end, is in test/xen/.)
 */
import { expect, test } from "bun:test";
import { MEM_PAGING_DROP_PAGE, VM_EVENT_FLAG_VCPU_PAUSED, xenReleaseAbi } from "../../src/backend/xen/abi.ts";
import { PagingRing } from "../../src/backend/xen/paging-ring.ts";

const abi = xenReleaseAbi(4, 17);
const sring = abi.layouts.vm_event_sring.fields;
const req = abi.layouts.vm_event_request;

/** Xen's side: puts requests and publishes them, reads responses. */
function xenSide(page: DataView) {
  let produced = page.getUint32(sring.req_prod.offset, true);
  return {
    put(vcpuId: number, gfn: number, flags = VM_EVENT_FLAG_VCPU_PAUSED, pagingFlags = 0) {
      const at = sring.ring.offset + (produced & 7) * req.size;
      page.setUint32(at + req.fields.version.offset, abi.constants.VM_EVENT_INTERFACE_VERSION, true);
      page.setUint32(at + req.fields.flags.offset, flags, true);
      page.setUint32(at + req.fields.reason.offset, 3, true);
      page.setUint32(at + req.fields.vcpu_id.offset, vcpuId, true);
      page.setBigUint64(at + req.fields["u.mem_paging.gfn"].offset, BigInt(gfn), true);
      page.setUint32(at + req.fields["u.mem_paging.flags"].offset, pagingFlags, true);
      produced = (produced + 1) >>> 0;
    },
    publish: () => page.setUint32(sring.req_prod.offset, produced, true),
    response(index: number) {
      const at = sring.ring.offset + (index & 7) * req.size;
      return {
        version: page.getUint32(at + req.fields.version.offset, true),
        flags: page.getUint32(at + req.fields.flags.offset, true),
        reason: page.getUint32(at + req.fields.reason.offset, true),
        vcpuId: page.getUint32(at + req.fields.vcpu_id.offset, true),
        gfn: Number(page.getBigUint64(at + req.fields["u.mem_paging.gfn"].offset, true)),
        pagingFlags: page.getUint32(at + req.fields["u.mem_paging.flags"].offset, true),
      };
    },
    responsesPublished: () => page.getUint32(sring.rsp_prod.offset, true),
  };
}

test("a fresh ring has 8 slots of 400 bytes, indexes at 0 and events asked for at 1", () => {
  const page = new DataView(new ArrayBuffer(4096));
  new Uint8Array(page.buffer).fill(0xaa);
  const ring = new PagingRing(page, abi, true);
  expect(ring.slots).toBe(8);
  expect([sring.req_prod, sring.req_event, sring.rsp_prod, sring.rsp_event].map((f) => page.getUint32(f.offset, true))).toEqual([
    0, 1, 0, 1,
  ]);
  expect(ring.takeRequests()).toEqual([]);
});

test("requests come out oldest first; responses carry the interface version, the reason, the vCPU and VCPU_PAUSED", () => {
  const page = new DataView(new ArrayBuffer(4096));
  const ring = new PagingRing(page, abi, true);
  const xen = xenSide(page);
  xen.put(0, 0x1000);
  xen.put(1, 0x2a10, VM_EVENT_FLAG_VCPU_PAUSED, MEM_PAGING_DROP_PAGE);
  xen.publish();
  const taken = ring.takeRequests();
  expect(taken).toEqual([
    { flags: VM_EVENT_FLAG_VCPU_PAUSED, reason: 3, vcpuId: 0, gfn: 0x1000, pagingFlags: 0 },
    { flags: VM_EVENT_FLAG_VCPU_PAUSED, reason: 3, vcpuId: 1, gfn: 0x2a10, pagingFlags: MEM_PAGING_DROP_PAGE },
  ]);
  expect(page.getUint32(sring.req_event.offset, true)).toBe(3); // an event for the next request
  for (const r of taken) ring.respond({ flags: r.flags, vcpuId: r.vcpuId, gfn: r.gfn, pagingFlags: r.pagingFlags });
  expect(xen.responsesPublished()).toBe(0); // not before push()
  ring.push();
  expect(xen.responsesPublished()).toBe(2);
  expect(xen.response(1)).toEqual({ version: 7, flags: 1, reason: 3, vcpuId: 1, gfn: 0x2a10, pagingFlags: MEM_PAGING_DROP_PAGE });
});

test("indexes wrap past 2^32 without losing a request", () => {
  const page = new DataView(new ArrayBuffer(4096));
  const start = 0xffff_fffe;
  for (const f of [sring.req_prod, sring.rsp_prod]) page.setUint32(f.offset, start, true);
  const ring = new PagingRing(page, abi, false);
  const xen = xenSide(page);
  for (let gfn = 0; gfn < 5; gfn++) xen.put(0, gfn);
  xen.publish();
  expect(ring.takeRequests().map((r) => r.gfn)).toEqual([0, 1, 2, 3, 4]);
  for (let gfn = 0; gfn < 5; gfn++) ring.respond({ flags: 1, vcpuId: 0, gfn, pagingFlags: 0 });
  ring.push();
  expect(xen.responsesPublished()).toBe(3);
  expect(xen.response(start + 4).gfn).toBe(4);
});

test("a ring claiming more waiting requests than it has slots is refused, and so are responses past the requests", () => {
  const page = new DataView(new ArrayBuffer(4096));
  const ring = new PagingRing(page, abi, true);
  page.setUint32(sring.req_prod.offset, 9, true);
  expect(() => ring.takeRequests()).toThrow("the paging ring is corrupt: 9 requests waiting in a ring of 8");
  const other = new PagingRing(new DataView(new ArrayBuffer(4096)), abi, true);
  expect(() => other.respond({ flags: 1, vcpuId: 0, gfn: 1, pagingFlags: 0 })).toThrow("more paging responses than requests taken");
});
