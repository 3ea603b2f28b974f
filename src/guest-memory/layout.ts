/**
 * Where guest RAM sits in guest-physical space. RAM above 3 GiB moves to 4 GiB and up, leaving the
 * hole where the LAPIC, IOAPIC and KVM's TSS live. All guest-supplied addresses are checked here.
 */
export const PAGE_SIZE = 4096;
export const LOW_RAM_LIMIT = 0xc000_0000; // 3 GiB
export const HIGH_RAM_BASE = 0x1_0000_0000; // 4 GiB

export interface RamRegion {
  /** Guest-physical start. */
  guestAddress: number;
  size: number;
  /** Offset of this region in the backing memfd (and in the host mapping). */
  offset: number;
}

export interface MemoryLayout {
  size: number;
  regions: RamRegion[];
}

export function memoryLayout(size: number): MemoryLayout {
  if (size <= 0 || size % PAGE_SIZE !== 0) throw new RangeError(`guest memory size ${size} is not a positive multiple of ${PAGE_SIZE}`);
  const low = Math.min(size, LOW_RAM_LIMIT);
  const regions: RamRegion[] = [{ guestAddress: 0, size: low, offset: 0 }];
  if (size > low) regions.push({ guestAddress: HIGH_RAM_BASE, size: size - low, offset: low });
  return { size, regions };
}

/**
 * The offset in the backing of guest range [address, address+length), or undefined if any byte of it
 * is outside RAM or the range crosses a region boundary. Works on bigint so that a guest cannot
 * wrap a 64-bit sum.
 */
export function translate(layout: MemoryLayout, address: bigint, length: bigint): number | undefined {
  if (address < 0n || length < 0n) return undefined;
  const end = address + length;
  for (const r of layout.regions) {
    const start = BigInt(r.guestAddress);
    if (address >= start && end <= start + BigInt(r.size)) return r.offset + Number(address - start);
  }
  return undefined;
}
