/** How to start this same program again, from source or as the compiled executable. */
export function selfCommand(): string[] {
  const compiled = Bun.main.startsWith("/$bunfs/") || Bun.main.startsWith("B:/~BUN/");
  return compiled ? [process.execPath] : [process.execPath, Bun.main];
}

/**
 * What every VMM process (a VM's, a clone's, a ready one's) has in its environment. Bun's own GC
 * timer collects on each JS thread every second until the heap has not grown for 30 s: a ready
 * VMM (main thread and two Workers) so spent ~1.8 ms of CPU a second for half a minute after it
 * was ready, as did each clone after it ran, which for a pool of 32 kept a nested host's one core
 * busy into the next fork. JSC's own collections, paced by allocation, are left as they are.
 */
export const VMM_ENVIRONMENT = { BUN_GC_TIMER_DISABLE: "1" } as const;
