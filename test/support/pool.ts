/** The processes of a run directory's pool, found in /proc (not from the keeper, which a test checks). */
import { readdirSync, readFileSync } from "node:fs";

function read(path: string): string {
  try {
    return readFileSync(path, "latin1");
  } catch {
    return "";
  }
}

/** Live processes started as `__ready` or `__pool` with SNOWFLOCK_RUN_DIR=dir. */
export function poolProcesses(dir: string): Array<{ pid: number; role: "__ready" | "__pool" }> {
  return readdirSync("/proc").flatMap((entry) => {
    if (!/^\d+$/.test(entry)) return [];
    const argv = read(`/proc/${entry}/cmdline`).split("\0");
    const role = argv.find((a) => a === "__ready" || a === "__pool") as "__ready" | "__pool" | undefined;
    if (!role || read(`/proc/${entry}/stat`).includes(") Z ")) return [];
    if (!read(`/proc/${entry}/environ`).split("\0").includes(`SNOWFLOCK_RUN_DIR=${dir}`)) return [];
    return [{ pid: Number(entry), role }];
  });
}
