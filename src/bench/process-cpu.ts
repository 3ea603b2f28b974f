/**
 * CPU time spent by a set of processes, over all their threads, from each thread's
 * /proc/PID/task/TID/schedstat (nanoseconds; /proc/PID/stat counts 10 ms clock ticks, coarser
 * than a whole pooled clone's start). A thread that ended between two looks is not counted.
 * And the whole host's, from /proc/stat, for what no process of a set accounts for.
 */
import { readdirSync, readFileSync } from "node:fs";

/** /proc/stat's cpu fields up to steal: guest and guest_nice are already inside user and nice. */
const COUNTED_FIELDS = 8;
/** /proc/stat counts in USER_HZ ticks, 100 a second on Linux. */
const MS_PER_TICK = 10;

/** Busy and total milliseconds over all cores so far (/proc/stat's first line; 10 ms ticks). */
export function hostCpuMs(): { busy: number; total: number } {
  const fields = readFileSync("/proc/stat", "utf8")
    .split("\n", 1)[0]!
    .trim()
    .split(/\s+/)
    .slice(1, 1 + COUNTED_FIELDS)
    .map(Number);
  const total = fields.reduce((sum, value) => sum + value, 0);
  const idle = (fields[3] ?? 0) + (fields[4] ?? 0); // idle, iowait
  return { busy: (total - idle) * MS_PER_TICK, total: total * MS_PER_TICK };
}

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
