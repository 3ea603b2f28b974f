/**
 * One bit per page, as descriptors and clone plans carry them (page i: byte i >> 3, bit i & 7,
 * the order the WASM page bitmap uses): for the few places that test or set single bits in a
 * plain byte array rather than a PageBitmap.
 */
export function hasPage(bitmap: Uint8Array, page: number): boolean {
  return ((bitmap[page >> 3]! >> (page & 7)) & 1) === 1;
}

export function markPage(bitmap: Uint8Array, page: number): void {
  bitmap[page >> 3]! |= 1 << (page & 7);
}
