/** Bounded polling for tests: a VM or process reaches a state in its own time, more so on a busy CI host. */

/** Polls `probe` until `done` holds of its value; returns the last value, also at the deadline (the caller's assertion then shows it). */
export async function pollUntil<T>(probe: () => T | Promise<T>, done: (value: T) => boolean, timeoutMs: number): Promise<T> {
  for (const deadline = Date.now() + timeoutMs; ; await Bun.sleep(25)) {
    const value = await probe();
    if (done(value) || Date.now() > deadline) return value;
  }
}

/** Polls `check` until it holds; past the deadline, fails naming `what`. */
export async function waitUntil(check: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  if (!(await pollUntil(check, (ok) => ok, timeoutMs))) throw new Error(`timed out waiting until ${what}`);
}
