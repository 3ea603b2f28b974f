/**
 * More tasks than cores, made on purpose: only `cores` of the given processes run at a time, each
 * for `sliceMs`, round-robin; the others are stopped (SIGSTOP) meanwhile, as the kernel deschedules
 * clones on a busy host. Their sockets keep receiving while they are stopped, so their buffers
 * fill and their timers expire just as a descheduled clone's do.
 */
export interface TimeShare {
  /** Lets every process run again and ends the rotation. */
  stop(): Promise<void>;
}

export function timeShare(pids: number[], options: { cores: number; sliceMs: number }): TimeShare {
  const signal = (pid: number, name: "SIGSTOP" | "SIGCONT") => {
    try {
      process.kill(pid, name);
    } catch {} // it has ended
  };
  let running = true;
  const rotation = (async () => {
    for (let turn = 0; running; turn++) {
      const first = (turn * options.cores) % pids.length;
      const on = new Set(Array.from({ length: options.cores }, (_, i) => pids[(first + i) % pids.length]!));
      for (const pid of pids) signal(pid, on.has(pid) ? "SIGCONT" : "SIGSTOP");
      await Bun.sleep(options.sliceMs);
    }
    for (const pid of pids) signal(pid, "SIGCONT");
  })();
  return {
    async stop() {
      running = false;
      await rotation;
    },
  };
}
