/**
 * Waiting until the host is quiet before a measured fork or restore: a pool just refilled, or the
 * clones of the run before just ended, leave the kernel and new processes busy for a second or
 * two, and a 32-clone fork measured then reads up to half again slower than on an idle host.
 */
import { hostCpuMs } from "./process-cpu.ts";

/** Busy below this share of all cores counts as quiet. */
const QUIET_SHARE = 0.2;
const WINDOW_MS = 100;
/** Quiet windows in a row that make a quiet host. */
const QUIET_WINDOWS = 3;
/** A host still busy after this is measured as it is. */
const MAX_WAIT_MS = 5000;

export async function awaitQuietHost(): Promise<void> {
  const deadline = performance.now() + MAX_WAIT_MS;
  let quiet = 0;
  let last = hostCpuMs();
  while (quiet < QUIET_WINDOWS && performance.now() < deadline) {
    await Bun.sleep(WINDOW_MS);
    const now = hostCpuMs();
    const total = now.total - last.total;
    quiet = total > 0 && (now.busy - last.busy) / total < QUIET_SHARE ? quiet + 1 : 0;
    last = now;
  }
}
