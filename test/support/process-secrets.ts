/**
 * What any local user sees of running processes: every process's command line and (as root here)
 * its environment, read from /proc as `ps -eo args` and `ps e` do. Tests look in them for secrets.
 */
import { readdirSync, readFileSync } from "node:fs";

export interface ProcessView {
  pid: number;
  args: string[];
  environ: string[];
}

function readList(path: string): string[] | undefined {
  try {
    return readFileSync(path, "utf8")
      .split("\0")
      .filter((part) => part !== "");
  } catch {
    return undefined; // the process ended while we looked
  }
}

export function processViews(): ProcessView[] {
  return readdirSync("/proc")
    .filter((entry) => /^\d+$/.test(entry))
    .flatMap((entry) => {
      const args = readList(`/proc/${entry}/cmdline`);
      const environ = readList(`/proc/${entry}/environ`);
      return args && environ ? [{ pid: Number(entry), args, environ }] : [];
    });
}

/** A clone VMM's arguments after `__clone`, or undefined for any other process. */
export function cloneArguments(view: ProcessView): string[] | undefined {
  const at = view.args.indexOf("__clone");
  return at < 0 ? undefined : view.args.slice(at + 1);
}

/**
 * Where `secrets` (hex strings) or anything shaped like one show in processes' arguments or
 * environments: the secrets themselves (hex or base64url), the forms a memory source once took on
 * a command line (`ondemand:`, `mcdist:`, `tcp:ADDR:PORT:TOKEN`) and the variables that once
 * carried a clone's cluster. Returns "pid: where: text" lines, empty when nothing leaks.
 */
export function leaks(views: ProcessView[], secrets: string[]): string[] {
  const forms = secrets.flatMap((hex) => [hex, Buffer.from(hex, "hex").toString("base64url"), Buffer.from(hex, "hex").toString("base64")]);
  const shapes = [/ondemand:/, /(^|[^a-z])mcdist:/, /tcp:[0-9.]+:\d+:[0-9a-f]{64}/, /^SNOWFLOCK_CLUSTER=/, /^SNOWFLOCK_HEURISTICS_OFF=/];
  const found: string[] = [];
  for (const view of views) {
    for (const [where, list] of [
      ["args", view.args],
      ["environ", view.environ],
    ] as const) {
      for (const text of list) {
        // A secret may also hide inside an encoded blob (a base64url JSON document, as mcdist's once did).
        const decoded = (text.match(/[A-Za-z0-9_-]{40,}/g) ?? []).map((blob) => Buffer.from(blob, "base64url").toString("latin1"));
        const holds = (t: string) => forms.some((form) => t.includes(form));
        if (holds(text) || decoded.some(holds) || shapes.some((shape) => shape.test(text)))
          found.push(`${view.pid}: ${where}: ${text.slice(0, 120)}`);
      }
    }
  }
  return found;
}
