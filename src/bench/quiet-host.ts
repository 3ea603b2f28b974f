/**
 * Waiting until the host is quiet before a measured fork or restore: a pool just refilled, or the
 * clones of the run before just ended, leave the kernel and new processes busy for a second or
 * two, and a 32-clone fork measured then reads up to half again slower than on an idle host.
 */
import { readFileSync } from "node:fs";

/** Busy below this share of all cores counts as quiet. */
const QUIET_SHARE = 0.2;
const WINDOW_MS = 100;
/** Quiet windows in a row that make a quiet host. */
const QUIET_WINDOWS = 3;
/** A host still busy after this is measured as it is. */
const MAX_WAIT_MS = 5000;

/** /proc/stat's cpu fields up to steal: guest and guest_nice are already inside user and nice. */
const COUNTED_FIELDS = 8;

/** Busy and total jiffies over all cores so far (/proc/stat's first line). */
function cpuJiffies(): { busy: number; total: number } {
  const fields = readFileSync("/proc/stat", "utf8")
    .split("\n", 1)[0]!
    .trim()
    .split(/\s+/)
    .slice(1, 1 + COUNTED_FIELDS)
    .map(Number);
  const total = fields.reduce((sum, value) => sum + value, 0);
  const idle = (fields[3] ?? 0) + (fields[4] ?? 0); // idle, iowait
  return { busy: total - idle, total };
}

export async function awaitQuietHost(): Promise<void> {
  const deadline = performance.now() + MAX_WAIT_MS;
  let quiet = 0;
  let last = cpuJiffies();
  while (quiet < QUIET_WINDOWS && performance.now() < deadline) {
    await Bun.sleep(WINDOW_MS);
    const now = cpuJiffies();
    const total = now.total - last.total;
    quiet = total > 0 && (now.busy - last.busy) / total < QUIET_SHARE ? quiet + 1 : 0;
    last = now;
  }
}
