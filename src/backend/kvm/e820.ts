/**
 * The BIOS memory map (E820) both boot paths hand the kernel: guest RAM, with the legacy VGA/BIOS
 * window reported reserved as on a PC.
 */
import type { MemoryLayout } from "../../guest-memory/layout.ts";

const E820_RAM = 1;
const E820_RESERVED = 2;
/** The legacy VGA/BIOS window: no kernel segment, boot structure or initrd goes there. */
export const LEGACY_HOLE = { start: 0xa0000, end: 0x100000 };

export interface E820Entry {
  address: number;
  size: number;
  type: number;
}

export function e820Map(layout: MemoryLayout): E820Entry[] {
  const map: E820Entry[] = [];
  for (const r of layout.regions) {
    if (r.guestAddress === 0 && r.size > LEGACY_HOLE.end) {
      map.push(
        { address: 0, size: LEGACY_HOLE.start, type: E820_RAM },
        { address: LEGACY_HOLE.start, size: LEGACY_HOLE.end - LEGACY_HOLE.start, type: E820_RESERVED },
        { address: LEGACY_HOLE.end, size: r.size - LEGACY_HOLE.end, type: E820_RAM },
      );
    } else map.push({ address: r.guestAddress, size: r.size, type: E820_RAM });
  }
  return map;
}
