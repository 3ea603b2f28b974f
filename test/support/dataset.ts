/** The workload dataset computed on the host, to check what the guest prints. */
const GAMMA = 0x9e3779b97f4a7c15n;
const MASK = (1n << 64n) - 1n;

/** The first `size` bytes of the splitmix64 stream for `seed`, 8 little-endian bytes per output. */
export function dataset(seed: bigint, size: number): Uint8Array {
  const words = new BigUint64Array(Math.ceil(size / 8));
  let state = seed & MASK;
  for (let i = 0; i < words.length; i++) {
    state = (state + GAMMA) & MASK;
    let z = state;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK;
    words[i] = z ^ (z >> 31n);
  }
  return new Uint8Array(words.buffer, 0, size);
}

export function sha256Hex(bytes: Uint8Array): string {
  return new Bun.CryptoHasher("sha256").update(bytes).digest("hex");
}
