/**
 * When this VMM was told what to run: its process start, or (a ready VMM from the pool) the
 * moment a fork handed it its clone. A VM's timings (built, running) count from here, so a
 * pooled clone's do not include the time it sat ready.
 */
let launchedAt = 0;

/** A VMM's own timings, from its launch: its VM built, its vCPUs running. */
export interface StartTimes {
  builtMs: number;
  runningMs: number;
}

export function markLaunched(): void {
  launchedAt = performance.now();
}

export function sinceLaunch(): number {
  return performance.now() - launchedAt;
}

/**
 * How a VMM says its vCPUs run to whoever launched it, one line: a claimed ready VMM on the claim's
 * connection, a detached VMM on its stderr (spawn.ts, with SAY_RUNNING_VARIABLE set), so that one
 * which ends at once still counts as started.
 */
export const RUNNING_PREFIX = "running ";
export const SAY_RUNNING_VARIABLE = "SNOWFLOCK_SAY_RUNNING";

export function runningLine(times: StartTimes): string {
  return `${RUNNING_PREFIX}${JSON.stringify(times)}`;
}

/** The timings in a running line, or undefined for a line that is not one (or is malformed). */
export function runningTimes(line: string): StartTimes | undefined {
  if (!line.startsWith(RUNNING_PREFIX)) return undefined;
  try {
    const { builtMs, runningMs } = JSON.parse(line.slice(RUNNING_PREFIX.length)) as Partial<StartTimes>;
    return typeof builtMs === "number" && typeof runningMs === "number" ? { builtMs, runningMs } : undefined;
  } catch {
    return undefined;
  }
}
