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
