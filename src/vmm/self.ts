/** How to start this same program again, from source or as the compiled executable. */
export function selfCommand(): string[] {
  const compiled = Bun.main.startsWith("/$bunfs/") || Bun.main.startsWith("B:/~BUN/");
  return compiled ? [process.execPath] : [process.execPath, Bun.main];
}

/**
 * What a clone's VMM process (a ready one of the pool, or one started for its clone) has in its
 * environment. Bun's own GC timer collects on each JS thread every second until the heap has not
 * grown for 30 s: a ready VMM (main thread and two Workers) so spent ~1.8 ms of CPU a second for
 * half a minute after it was ready, as did each clone after it ran, which for a pool of 32 kept a
 * nested host's one core busy into the next fork. JSC's own collections, paced by allocation, are
 * left as they are. A VM started by `run` keeps the timer: alone and forking again and again, it
 * holds less memory with it (`bench soak`).
 */
export const CLONE_VMM_ENVIRONMENT = { BUN_GC_TIMER_DISABLE: "1" } as const;
