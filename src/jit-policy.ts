/**
 * JavaScriptCore compiles a function on its JIT threads once it has run often enough. A ready
 * VMM's warm-up runs its clone's code paths once and the clone's start runs them again, which
 * pushed many of them over a tier-up threshold: the JIT threads then compiled code that would not
 * run again while the clone's siblings were starting on the same cores (nested KVM host, 16 cow
 * clones: 22-39 ms less CPU per clone with it held, of 112-116 ms). A ready VMM's threads raise the
 * thresholds while it waits and starts its clone (Bun.unsafe.setJITPolicy), and lower them again
 * once the clone has run a while: its loops (vCPU exits, faults) are worth compiling then.
 */

/** How many times more reluctant to compile a ready VMM's threads are until their clone runs. */
const WHILE_STARTING = 1000;

/** Set by the pool's keeper in a ready VMM's environment, which its Workers see too. */
export const READY_VMM_VARIABLE = "SNOWFLOCK_READY_VMM";

// Per thread: each Worker has its own copy of this module and its own JavaScriptCore VM.
let raised = false;

/** In a ready VMM's thread: the JIT holds back from here until releaseStartJit. */
export function holdStartJit(): void {
  if (process.env[READY_VMM_VARIABLE] !== "1" || raised) return;
  Bun.unsafe.setJITPolicy(WHILE_STARTING);
  raised = true;
}

/** The JIT as usual again on this thread (nothing if it was not held). */
export function releaseStartJit(): void {
  if (!raised) return;
  Bun.unsafe.setJITPolicy(1);
  raised = false;
}
