/** The built-in guest's workload datasets (guest/workloads/parallel.c) and answers, computed on the host to check what the guest prints. */
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

/**
 * What sha256-par prints for `clones` clones (before `granted`): clone i hashes the i-th of equal
 * contiguous slices, the last one taking the remainder.
 */
export function sliceLines(seed: bigint, size: number, clones: number, data = dataset(seed, size)): string[] {
  const slice = Math.floor(size / clones);
  return Array.from({ length: clones }, (_, i) => {
    const offset = i * slice;
    const length = i === clones - 1 ? size - offset : slice;
    return `slice ${i + 1} ${offset} ${length} ${sha256Hex(data.subarray(offset, offset + length))}`;
  });
}

/**
 * What search-par prints for `clones` clones (before `granted`): clone i counts the offsets k where
 * byte[k] | byte[k+1] << 8 equals (i * 40503) & 0xffff. Every pair is counted once; each clone's
 * count is then a lookup.
 */
export function countLines(seed: bigint, size: number, clones: number, data = dataset(seed, size)): string[] {
  const pairs = new Uint32Array(65536);
  for (let k = 0; k + 1 < size; k++) pairs[data[k]! | (data[k + 1]! << 8)]!++;
  return Array.from({ length: clones }, (_, index) => {
    const pattern = ((index + 1) * 40503) & 0xffff;
    return `count ${index + 1} ${pattern} ${pairs[pattern]}`;
  });
}

/** The parallel workloads whose answers the host can compute. */
export type ParallelWorkload = "sha256-par" | "search-par" | "alloc-par";

/**
 * The console lines `workload` prints for N clones over this dataset (the clones' lines, then
 * `granted N`), as a function of N: the dataset is made once for every N asked.
 */
export function expectedConsole(workload: ParallelWorkload, seed: number, size: number): (clones: number) => string[] {
  if (workload === "alloc-par") {
    // Clone i fills SIZE bytes of its own with the dataset for SEED + i.
    return (clones) => [
      ...Array.from({ length: clones }, (_, k) => `alloc ${k + 1} ${sha256Hex(dataset(BigInt(seed + k + 1), size))}`),
      `granted ${clones}`,
    ];
  }
  const data = dataset(BigInt(seed), size);
  const lines = workload === "search-par" ? countLines : sliceLines;
  return (clones) => [...lines(BigInt(seed), size, clones, data), `granted ${clones}`];
}
