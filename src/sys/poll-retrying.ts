/**
 * Waiting on fds in the Workers that serve pages (memtap, mcdist): poll(2) with EINTR as "nothing
 * ready yet", and the error a wait throws when its wake fd fired.
 */
import { EINTR } from "./constants.ts";
import { SyscallError } from "./errno.ts";
import { poll, type PollRequest } from "./files.ts";

/** Thrown when the wake fd fired: someone asked this thread to stop; not a failure. */
export class Woken extends Error {
  override name = "Woken";
}

/** poll(2) where a signal landing on this thread counts as "nothing ready yet". */
export function pollRetrying(requests: PollRequest[], timeoutMs: number): number[] {
  try {
    return poll(requests, timeoutMs);
  } catch (error) {
    if (error instanceof SyscallError && error.errno === EINTR) return requests.map(() => 0);
    throw error;
  }
}
