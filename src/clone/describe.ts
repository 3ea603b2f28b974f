/**
 * Turning a paused machine into a VM descriptor: its captured state, which pages are non-zero,
 * and the pages a clone touches first (page tables, the pages under each vCPU's RIP and RSP).
 */
import type { FreePageMap, KvmMachine } from "../backend/kvm/machine.ts";
import { backingPage, pageTablePages, virtualToPhysical } from "../backend/kvm/page-walk.ts";
import * as abi from "../backend/kvm/abi.ts";
import { StructView } from "../sys/layout.ts";
import type { Descriptor } from "../descriptor/format.ts";
import { PAGE_SIZE } from "../memory/layout.ts";

export function describeMachine(machine: KvmMachine, about: { name: string; cmdline: string }): Descriptor {
  const state = machine.capture();
  const memory = machine.memory;
  using nonZero = memory.nonZeroPages();
  const eager = new Set<number>();
  for (const vcpu of state.vcpus) {
    const sregs = new StructView(abi.kvm_sregs, vcpu.sregs);
    const regs = new StructView(abi.kvm_regs, vcpu.regs);
    const cr3 = sregs.get64("cr3");
    const paging = (sregs.get64("cr0") & (1n << 31n)) !== 0n;
    const tablePages = paging ? pageTablePages(memory, cr3) : [];
    const addresses = [regs.get64("rip"), regs.get64("rsp")].map((va) => (paging ? virtualToPhysical(memory, cr3, va) : va));
    for (const address of [...tablePages, ...addresses]) {
      const page = address === undefined ? undefined : backingPage(memory, address);
      if (page !== undefined) eager.add(page);
    }
  }
  const pages = new Map<number, Uint8Array>();
  for (const page of eager) pages.set(page, memory.bytes.slice(page * PAGE_SIZE, (page + 1) * PAGE_SIZE));
  const nonZeroPages = nonZero.toBytes();
  const freePageMap = machine.freePageMap;
  return {
    meta: { backend: "kvm", name: about.name, cmdline: about.cmdline, memorySize: memory.size, regions: memory.layout.regions, createdAt: new Date().toISOString(), freePageMap },
    state,
    nonZeroPages,
    pages,
    freePages: freePageMap && freePages(machine, freePageMap, nonZeroPages.byteLength),
  };
}

/**
 * The guest allocator's free pages, by backing page (bit set = free), read from its bitmap (bit
 * set = used, by page frame) — which the guest may have moved or broken since it said where it
 * was: anything outside guest memory is simply not free.
 */
function freePages(machine: KvmMachine, map: FreePageMap, bytes: number): Uint8Array | undefined {
  const memory = machine.memory;
  const used = memory.guestRange(BigInt(map.address), BigInt(Math.ceil(map.frames / 8)));
  if (!used) return undefined;
  const free = new Uint8Array(bytes);
  // Region by region (this runs while the parent is paused): frame f of a region is backing page
  // (offset + f * PAGE_SIZE - guestAddress) / PAGE_SIZE.
  for (const region of memory.layout.regions) {
    const first = region.guestAddress / PAGE_SIZE;
    const end = Math.min(map.frames, first + region.size / PAGE_SIZE);
    for (let frame = first, page = region.offset / PAGE_SIZE; frame < end; frame++, page++) {
      if (!((used[frame >> 3]! >> (frame & 7)) & 1)) free[page >> 3]! |= 1 << (page & 7);
    }
  }
  return free;
}
