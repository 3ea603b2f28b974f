/**
 * When this VMM was told what to run: its process start, or (a ready VMM from the pool) the
 * moment a fork handed it its clone. A VM's timings (built, running) count from here, so a
 * pooled clone's do not include the time it sat ready.
 */
let launchedAt = 0;

export function markLaunched(): void {
  launchedAt = performance.now();
}

export function sinceLaunch(): number {
  return performance.now() - launchedAt;
}
