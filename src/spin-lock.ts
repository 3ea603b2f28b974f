/**
 * A lock in one Int32 slot of a SharedArrayBuffer, for device registers (and a disk overlay) that every vCPU thread
 * and the machine's thread touch: held for a register access or one queue's service, so a
 * waiter spins rather than sleeps.
 */
export function withSpinLock<T>(words: Int32Array, slot: number, body: () => T): T {
  while (Atomics.compareExchange(words, slot, 0, 1) !== 0) {}
  try {
    return body();
  } finally {
    Atomics.store(words, slot, 0);
  }
}
