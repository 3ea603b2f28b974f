/**
 * Reading an x86-64 guest's own 4-level page tables from guest memory — to find the page-table
 * pages and the pages under RIP and RSP that a clone needs at once (on KVM and on Xen). The tables are guest data:
 * every entry is bounds-checked, and the walk is bounded by the table sizes.
 */
import { type MemoryLayout, PAGE_SIZE, translate } from "./layout.ts";

/** Guest-physical memory to read from: a running guest's (GuestMemory) or a frozen image's. */
export interface PhysicalMemory {
  readonly layout: MemoryLayout;
  /** The bytes of guest range [address, address+length), if all of it is RAM. */
  guestRange(address: bigint, length: bigint): Uint8Array | undefined;
}

const PRESENT = 1n;
const LARGE = 1n << 7n;
const ADDRESS_MASK = 0x000f_ffff_ffff_f000n;

/** Backing page number of guest-physical `address`, if it is RAM. */
export function backingPage(memory: PhysicalMemory, address: bigint): number | undefined {
  const offset = translate(memory.layout, address & ~0xfffn, BigInt(PAGE_SIZE));
  return offset === undefined ? undefined : offset / PAGE_SIZE;
}

function table(memory: PhysicalMemory, address: bigint): BigUint64Array | undefined {
  const bytes = memory.guestRange(address & ADDRESS_MASK, 4096n);
  return bytes && new BigUint64Array(bytes.buffer, bytes.byteOffset, 512);
}

/** Guest-physical addresses of every page-table page reachable from `cr3` (4-level paging). */
export function pageTablePages(memory: PhysicalMemory, cr3: bigint): bigint[] {
  const found: bigint[] = [];
  const visit = (address: bigint, level: number) => {
    const entries = table(memory, address);
    if (!entries) return;
    found.push(address & ADDRESS_MASK);
    if (level === 1) return;
    for (const entry of entries) {
      if (!(entry & PRESENT) || (level < 4 && entry & LARGE)) continue;
      visit(entry & ADDRESS_MASK, level - 1);
    }
  };
  visit(cr3, 4);
  return found;
}

/** Guest-physical address that virtual `address` maps to under `cr3`, if mapped. */
export function virtualToPhysical(memory: PhysicalMemory, cr3: bigint, address: bigint): bigint | undefined {
  let base = cr3;
  for (let level = 4; level >= 1; level--) {
    const entries = table(memory, base);
    if (!entries) return undefined;
    const shift = 12n + 9n * BigInt(level - 1);
    const entry = entries[Number((address >> shift) & 511n)]!;
    if (!(entry & PRESENT)) return undefined;
    if (level === 1 || (level < 4 && entry & LARGE)) {
      const pageMask = (1n << shift) - 1n;
      return (entry & ADDRESS_MASK & ~pageMask) | (address & pageMask);
    }
    base = entry & ADDRESS_MASK;
  }
  return undefined;
}
