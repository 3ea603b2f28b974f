/**
 * CPU time spent by a set of processes, over all their threads, from each thread's
 * /proc/PID/task/TID/schedstat (nanoseconds; /proc/PID/stat counts 10 ms clock ticks, coarser
 * than a whole pooled clone's start). A thread that ended between two looks is not counted.
 */
import { readdirSync, readFileSync } from "node:fs";

/** Nanoseconds of CPU each live process in `pids` has used so far; a process gone is left out. */
export function cpuByProcess(pids: Iterable<number>): Map<number, number> {
  const spent = new Map<number, number>();
  for (const pid of new Set(pids)) {
    let tasks: string[];
    try {
      tasks = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue;
    }
    let total = 0;
    for (const task of tasks) {
      try {
        total += Number(readFileSync(`/proc/${pid}/task/${task}/schedstat`, "utf8").split(" ", 1)[0]);
      } catch {} // the thread ended while we looked
    }
    spent.set(pid, total);
  }
  return spent;
}

/** Milliseconds of CPU the processes of `after` used since `before`; one absent from `before` counts from its start. */
export function cpuMsSince(before: Map<number, number>, after: Map<number, number>): number {
  let total = 0;
  for (const [pid, ns] of after) total += ns - (before.get(pid) ?? 0);
  return total / 1e6;
}
