/**
 * Plain TypeScript reference of the page-bitmap kernel (wasm/page-bitmap.ts): one byte (0/1) per
 * bit, written to be obviously right. Tests and bench only.
 */

export class RefBitmap {
  readonly bits: Uint8Array;
  constructor(readonly size: number) {
    this.bits = new Uint8Array(size);
  }
  static fromMincore(vec: Uint8Array): RefBitmap {
    const r = new RefBitmap(vec.length);
    for (let i = 0; i < vec.length; i++) r.bits[i] = (vec[i] ?? 0) & 1;
    return r;
  }
  static fromBytes(bytes: Uint8Array, size: number): RefBitmap {
    const r = new RefBitmap(size);
    for (let i = 0; i < size; i++) r.bits[i] = ((bytes[i >> 3] ?? 0) >> (i & 7)) & 1;
    return r;
  }
  set(start: number, count: number): void {
    this.bits.fill(1, start, start + count);
  }
  clear(start: number, count: number): void {
    this.bits.fill(0, start, start + count);
  }
  test(i: number): boolean {
    return this.bits[i] === 1;
  }
  popcount(): number {
    let n = 0;
    for (const b of this.bits) n += b;
    return n;
  }
  nextSet(from: number): number {
    for (let i = from; i < this.size; i++) if (this.bits[i] === 1) return i;
    return -1;
  }
  nextClear(from: number): number {
    for (let i = from; i < this.size; i++) if (this.bits[i] === 0) return i;
    return -1;
  }
  and(o: RefBitmap): void {
    for (let i = 0; i < this.size; i++) this.bits[i] = (this.bits[i] ?? 0) & (o.bits[i] ?? 0);
  }
  or(o: RefBitmap): void {
    for (let i = 0; i < this.size; i++) this.bits[i] = (this.bits[i] ?? 0) | (o.bits[i] ?? 0);
  }
  andNot(o: RefBitmap): void {
    for (let i = 0; i < this.size; i++) this.bits[i] = (this.bits[i] ?? 0) & ~(o.bits[i] ?? 0) & 1;
  }
  runs(): [number, number][] {
    const out: [number, number][] = [];
    let i = 0;
    while (i < this.size) {
      if (this.bits[i] === 1) {
        const start = i;
        while (i < this.size && this.bits[i] === 1) i++;
        out.push([start, i - start]);
      } else {
        i++;
      }
    }
    return out;
  }
  toBytes(): Uint8Array {
    const out = new Uint8Array(Math.ceil(this.size / 8));
    for (let i = 0; i < this.size; i++) {
      if (this.bits[i] === 1) out[i >> 3] = (out[i >> 3] ?? 0) | (1 << (i & 7));
    }
    return out;
  }
}
