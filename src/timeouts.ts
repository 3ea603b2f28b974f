/**
 * How long snowflock waits on another party (a VMM coming up, a memory server, an agent) before
 * it gives up. The defaults suit a host with hardware virtualization; on a slow one (KVM nested
 * under software emulation, an overloaded dom0) SNOWFLOCK_TIMEOUT_SCALE=N makes every such wait
 * N times longer.
 */
import { SnowflockError } from "./errors.ts";

export const TIMEOUT_SCALE_VARIABLE = "SNOWFLOCK_TIMEOUT_SCALE";
const MAX_SCALE = 1000;

/** The scale from the environment; a bad value is an error naming the variable. */
export function timeoutScale(env: Record<string, string | undefined> = process.env): number {
  const text = env[TIMEOUT_SCALE_VARIABLE];
  if (text === undefined || text === "") return 1;
  const scale = Number(text);
  if (!Number.isFinite(scale) || scale <= 0 || scale > MAX_SCALE) {
    throw new SnowflockError(
      "USAGE",
      `bad ${TIMEOUT_SCALE_VARIABLE} '${text}'`,
      `give a number above 0 and at most ${MAX_SCALE}, such as 10`,
    );
  }
  return scale;
}

/** A default wait, scaled. The CLI checks the variable at start, so here a bad one counts as 1. */
export function scaledTimeout(ms: number): number {
  try {
    return Math.round(ms * timeoutScale());
  } catch {
    return ms;
  }
}

/** Waits until `promise` settles or `ms` pass, whichever comes first (its outcome is not looked at; the timer is cleared). */
export async function settledOrAfter(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([promise.then(noop, noop), new Promise<void>((done) => (timer = setTimeout(done, ms)))]);
  clearTimeout(timer);
}

const noop = () => {};
