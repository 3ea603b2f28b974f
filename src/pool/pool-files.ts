/**
 * Where a host's pool of ready VMMs lives in its run directory: the keeper's socket and log, and
 * one socket per ready process (`@ready-PID.sock`, renamed `@taken-PID.sock` by the one fork that
 * claims it). '@' is in no VM name, so none of these is ever taken for a VM's files.
 */
import { readdirSync, rmSync } from "node:fs";
import { join } from "node:path";

/** What a ready process says to its keeper, one word a line on its stdout. */
export const READY_LINE = "ready";
export const CLAIMED_LINE = "claimed";

export function poolPaths(dir: string): { keeperSocket: string; log: string } {
  return { keeperSocket: join(dir, "@pool.sock"), log: join(dir, "@pool.log") };
}

export function readySocket(dir: string, pid: number): string {
  return join(dir, `@ready-${pid}.sock`);
}

export function takenSocket(dir: string, pid: number): string {
  return join(dir, `@taken-${pid}.sock`);
}

/** Removes a ready process's socket under either name (it was claimed, or it is gone). */
export function removeReadySockets(dir: string, pid: number): void {
  rmSync(readySocket(dir, pid), { force: true });
  rmSync(takenSocket(dir, pid), { force: true });
}

/** The pids of the ready processes waiting in `dir`, oldest socket name order. */
export function readyPids(dir: string): number[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names.flatMap((name) => {
    const match = /^@ready-(\d{1,10})\.sock$/.exec(name);
    return match ? [Number(match[1])] : [];
  });
}
