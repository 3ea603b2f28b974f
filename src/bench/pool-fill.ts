/**
 * A benchmark's pool of ready VMMs (pool/): full before each measured fork, and refilled only then,
 * so every clone measured starts from a ready VMM and no refill competes with the clones.
 */
import { SnowflockError } from "../errors.ts";
import type { PoolState } from "../pool/keeper.ts";
import { awaitPoolSettled, setPool } from "../pool/pool-daemon.ts";

/** The longest refill delay a pool takes: in a benchmark a pool refills only in fillPool. */
const REFILL_NEVER_MS = 3_600_000;

/**
 * Resizes the pool in run directory `dir` to `size` (starting the pool daemon there if no keeper,
 * e.g. an agent's, serves it) and waits until it is full; null for size 0.
 */
export async function fillPool(dir: string, size: number): Promise<PoolState | null> {
  if (size === 0) return null;
  await setPool(dir, { size, maxIdleBytes: Number.MAX_SAFE_INTEGER, refillAfterMs: REFILL_NEVER_MS });
  const state = await awaitPoolSettled(dir);
  if (!state || state.ready < size)
    throw new SnowflockError(
      "VM_STATE",
      `the pool in ${dir} did not fill: ${state ? `${state.ready} of ${size} ready` : "no keeper"}`,
      state?.lastError,
    );
  return state;
}
