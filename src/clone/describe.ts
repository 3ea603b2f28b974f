/**
 * Turning a paused machine into a VM descriptor: its captured state, which pages are non-zero,
 * and the pages a clone touches first (page tables, the pages under each vCPU's RIP and RSP).
 */
import type { CaptureOptions, DomainSnapshot, FreePageMap, Machine } from "../backend/backend.ts";
import type { Descriptor } from "../descriptor/format.ts";
import { memoryLayout, PAGE_SIZE } from "../guest-memory/layout.ts";
import { hasPage, markPage } from "../guest-memory/page-bits.ts";

/** The descriptor, and (with `freezeDisks`) the frozen disks it names, which the caller holds open for clones. */
export function describeMachine(
  machine: Machine,
  about: { name: string; cmdline: string },
  options: CaptureOptions = {},
): { descriptor: Descriptor; frozenDisks: number[] } {
  const { state, eagerPages, frozenDisks } = machine.capture(options);
  const memory = machine.memory;
  using nonZero = memory.nonZeroPages();
  const pages = new Map<number, Uint8Array>();
  for (const page of eagerPages) pages.set(page, memory.bytes.slice(page * PAGE_SIZE, (page + 1) * PAGE_SIZE));
  const nonZeroPages = nonZero.toBytes();
  const freePageMap = machine.freePageMap;
  const descriptor: Descriptor = {
    meta: {
      backend: state.backend,
      name: about.name,
      cmdline: about.cmdline,
      memorySize: memory.size,
      regions: memory.layout.regions,
      createdAt: new Date().toISOString(),
      freePageMap,
    },
    state,
    nonZeroPages,
    pages,
    freePages: freePageMap && freePages(machine, freePageMap, nonZeroPages.byteLength),
  };
  return { descriptor, frozenDisks };
}

/** The descriptor of a domain the hypervisor runs (Xen): its memory is one region, frame i at backing page i. */
export function describeDomain(snapshot: DomainSnapshot): Descriptor {
  const { name, cmdline, state, nonZeroPages, pages } = snapshot;
  return {
    meta: {
      backend: state.backend,
      name,
      cmdline,
      memorySize: state.memorySize,
      regions: memoryLayout(state.memorySize).regions,
      createdAt: new Date().toISOString(),
    },
    state,
    nonZeroPages,
    pages,
  };
}

/**
 * The guest allocator's free pages, by backing page (bit set = free), read from its bitmap (bit
 * set = used, by page frame) — which the guest may have moved or broken since it said where it
 * was: anything outside guest memory is simply not free.
 */
function freePages(machine: Machine, map: FreePageMap, bytes: number): Uint8Array | undefined {
  const memory = machine.memory;
  const used = memory.guestRange(BigInt(map.address), BigInt(Math.ceil(map.frames / 8)));
  if (!used) return undefined;
  const free = new Uint8Array(bytes);
  // Region by region (this runs while the parent is paused): frame f of a region is backing page
  // (offset + f * PAGE_SIZE - guestAddress) / PAGE_SIZE.
  for (const region of memory.layout.regions) {
    const first = region.guestAddress / PAGE_SIZE;
    const end = Math.min(map.frames, first + region.size / PAGE_SIZE);
    let frame = first;
    let page = region.offset / PAGE_SIZE;
    // Whole bytes where frames and pages line up on a byte (a 1 GiB map is 262,144 frames).
    if (frame % 8 === 0 && page % 8 === 0) for (; frame + 8 <= end; frame += 8, page += 8) free[page >> 3] = ~used[frame >> 3]! & 0xff;
    for (; frame < end; frame++, page++) if (!hasPage(used, frame)) markPage(free, page);
  }
  return free;
}
