/**
 * A ready process's idle memory: its proportional set size (PSS), so the pages every ready
 * process shares (the executable, Bun's own) count once over the pool rather than once per process.
 */
import { readFileSync } from "node:fs";

/** PSS in bytes (VmRSS where smaps_rollup is missing), or undefined once the process is gone. */
export function processMemoryBytes(pid: number): number | undefined {
  for (const [file, field] of [
    [`/proc/${pid}/smaps_rollup`, "Pss:"],
    [`/proc/${pid}/status`, "VmRSS:"],
  ] as const) {
    try {
      const line = readFileSync(file, "utf8")
        .split("\n")
        .find((l) => l.startsWith(field));
      if (line) return Number(line.slice(field.length).trim().split(/\s+/)[0]) * 1024;
    } catch {}
  }
  return undefined;
}
