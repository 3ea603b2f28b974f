/**
 * Where running VMs are found: each VMM process keeps, under $SNOWFLOCK_RUN_DIR (default
 * /run/snowflock for root, $XDG_RUNTIME_DIR/snowflock otherwise), NAME.sock (its control socket), NAME.json (what it runs) and
 * NAME.log (its console). Other commands reach a VM by name through these. Test hosts (`cluster
 * up`) each have a run directory one level below this one; commands run outside every test host
 * see their VMs too.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SnowflockError } from "./errors.ts";
import { readRegularFile } from "./bounded-read.ts";
import { writePrivateFile } from "./sys/private-file.ts";
import { scaledTimeout } from "./timeouts.ts";

export interface VmRecord {
  name: string;
  pid: number;
  workload: string;
  memoryBytes: number;
  vcpus: number;
  startedAt: string;
  /** For a clone: its parent's name and its clone ID (1, 2, ...). */
  parent?: string;
  cloneId?: number;
  /** For a VM in a cluster: the inventory host it runs on. */
  host?: string;
  /**
   * When the process `pid` started (field 22 of /proc/PID/stat, clock ticks since boot): a PID
   * reused by another process after the VMM died has another start time, so it is never taken for the VM.
   */
  pidStartTime?: string;
}

export function runDir(): string {
  if (process.env.SNOWFLOCK_RUN_DIR) return process.env.SNOWFLOCK_RUN_DIR;
  if (process.getuid?.() === 0) return "/run/snowflock";
  return join(process.env.XDG_RUNTIME_DIR || tmpdir(), `snowflock-${process.getuid?.() ?? "user"}`);
}

/**
 * Refuses a run directory someone else could write: another user could plant records (and so
 * have `kill` signal their choice of process) or links that snowflock would write through.
 */
function checkRunDir(dir: string): string {
  const stat = statSync(dir);
  const euid = process.geteuid?.();
  const problem = !stat.isDirectory()
    ? "is not a directory"
    : euid !== undefined && stat.uid !== euid
      ? `belongs to uid ${stat.uid}, not to you (uid ${euid})`
      : (stat.mode & 0o022) !== 0
        ? `is writable by others (mode ${(stat.mode & 0o777).toString(8).padStart(4, "0")})`
        : undefined;
  if (problem) {
    const hint = "remove it (snowflock makes it again, mode 0700) or set SNOWFLOCK_RUN_DIR to a directory of your own";
    throw new SnowflockError("USAGE", `the run directory ${dir} ${problem}`, hint);
  }
  return dir;
}

/** The directories VMs may be found in: the run directory, then the test hosts' below it. */
function searchedDirs(): string[] {
  const dir = runDir();
  if (!existsSync(dir)) return [dir];
  const entries = readdirSync(checkRunDir(dir), { withFileTypes: true });
  const below = entries.filter((e) => e.isDirectory()).map((e) => checkRunDir(join(dir, e.name)));
  return [dir, ...below.sort()];
}

/** Where VM `name`'s files are: the run directory, or the test host's below it that has them. */
export function vmDir(name: string): string {
  const dirs = searchedDirs();
  return dirs.find((dir) => ["json", "sock", "log"].some((ext) => existsSync(join(dir, `${name}.${ext}`)))) ?? dirs[0]!;
}

export function vmPaths(name: string, dir = vmDir(name)) {
  return {
    socket: join(dir, `${name}.sock`),
    record: join(dir, `${name}.json`),
    log: join(dir, `${name}.log`),
    /** stderr of a detached VMM process, shown if it fails to come up. */
    startupErrors: join(dir, `${name}.err`),
  };
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

export function checkName(name: string): string {
  if (!NAME.test(name)) {
    throw new SnowflockError(
      "USAGE",
      `bad VM name '${name}'`,
      "use up to 63 letters, digits, '.', '_' or '-', starting with a letter or digit",
    );
  }
  return name;
}

export function ensureRunDir(): string {
  const dir = runDir();
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (error) {
    throw new SnowflockError(
      "USAGE",
      `cannot create the run directory ${dir}: ${(error as Error).message}`,
      "set SNOWFLOCK_RUN_DIR to a writable directory",
    );
  }
  return checkRunDir(dir);
}

/** Field 22 of /proc/PID/stat (start time in clock ticks after boot); undefined if there is no such process. */
export function processStartTime(pid: number): string | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // The command name (field 2) may hold spaces and parentheses: count fields after its last ')'.
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[22 - 3];
}

/** Whether the VMM of `record` still runs: its PID is alive and is still the process that wrote the record. */
export function vmAlive(record: VmRecord): boolean {
  return record.pidStartTime !== undefined && processStartTime(record.pid) === record.pidStartTime && processAlive(record.pid);
}

/** Sends `signal` to `pid`; false when the process has gone already (it may end between a check and the signal). */
export function signalProcess(pid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(pid, signal);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ESRCH") return false;
    throw error;
  }
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Records of VMs whose process is alive; files of dead ones are removed on the way. Other JSON
 * files in the run directory (a cluster inventory) are not VM records and are left alone.
 */
export function listVms(): VmRecord[] {
  const records: VmRecord[] = [];
  for (const dir of searchedDirs()) {
    if (!existsSync(dir)) continue;
    for (const file of readdirSync(dir)) {
      if (!file.endsWith(".json")) continue;
      const name = file.slice(0, -5);
      const record = readRecord(name, dir);
      if (record && vmAlive(record)) records.push(record);
      else if (record) removeVmFiles(name, { keepLog: true }, dir);
    }
  }
  return records.sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
}

/** Every clone below `name` (clones of clones too), from a listing. */
export function descendants(records: VmRecord[], name: string): VmRecord[] {
  const children = records.filter((r) => r.parent === name);
  return children.flatMap((c) => [c, ...descendants(records, c.name)]);
}

/** A record is a few hundred bytes; anything much larger (or no regular file: a FIFO would block) is none. */
const MAX_RECORD_BYTES = 64 * 1024;

/** The record of VM `name`; undefined when there is none or the file is no VM record. */
export function readRecord(name: string, dir?: string): VmRecord | undefined {
  const path = vmPaths(name, dir).record;
  let value: Partial<VmRecord>;
  try {
    value = JSON.parse(new TextDecoder().decode(readRegularFile(path, { what: "VM record", maxBytes: MAX_RECORD_BYTES, noFollow: true })));
  } catch {
    return undefined;
  }
  return value?.name === name && Number.isInteger(value.pid) ? (value as VmRecord) : undefined;
}

/** Publishes the record of a VM whose VMM is `record.pid`, with that process's start time. */
export function writeRecord(record: VmRecord): void {
  const withStart = { ...record, pidStartTime: processStartTime(record.pid) };
  writePrivateFile(vmPaths(record.name, runDir()).record, `${JSON.stringify(withStart, null, 2)}\n`);
}

export function removeVmFiles(name: string, { keepLog }: { keepLog: boolean }, dir?: string): void {
  const paths = vmPaths(name, dir);
  rmSync(paths.socket, { force: true });
  rmSync(paths.record, { force: true });
  if (!keepLog) for (const log of [paths.log, `${paths.log}.1`]) rmSync(log, { force: true });
}

/** Consoles of ended VMs kept per run directory for `snowflock logs` after the fact; older ones go. */
export const KEPT_ENDED_LOGS = 64;

/** The ended VMs whose console logs are in `dir` (no record beside the log), newest first. */
export function endedLogs(dir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const present = new Set(names);
  // Only a VM's name: other logs here (the pool's `@pool.log`) are no VM's, and their files are not to be pruned.
  const ended = names
    .filter((n) => n.endsWith(".log") && NAME.test(n.slice(0, -4)) && !present.has(`${n.slice(0, -4)}.json`))
    .map((n) => n.slice(0, -4));
  const modified = (name: string) => {
    try {
      return statSync(join(dir, `${name}.log`)).mtimeMs;
    } catch {
      return 0;
    }
  };
  return ended
    .map((name) => ({ name, at: modified(name) }))
    .sort((a, b) => b.at - a.at)
    .map((e) => e.name);
}

/**
 * Keeps the newest KEPT_ENDED_LOGS consoles of ended VMs in `dir`: a VM that forks and kills clones
 * all day must not fill /run. It looks at every log, so it runs once per VM start or clone round.
 */
export function pruneEndedLogs(dir: string = runDir()): void {
  for (const name of endedLogs(dir).slice(KEPT_ENDED_LOGS)) removeVmFiles(name, { keepLog: false }, dir);
}

/** A free name like `serve-3` for a VM started without --name. */
export function freeName(base: string): string {
  const taken = new Set(listVms().map((r) => r.name));
  for (let i = 1; ; i++) if (!taken.has(`${base}-${i}`)) return `${base}-${i}`;
}

const ENDED_CLONE_WAIT_MS = scaledTimeout(5000);

/** A clone of an earlier ticket with the same name may still be tearing down; let it finish (bounded). */
export async function awaitEndedClone(name: string, parent: string): Promise<void> {
  const deadline = Date.now() + ENDED_CLONE_WAIT_MS;
  for (;;) {
    const record = readRecord(name, runDir());
    if (!record || record.parent !== parent || !vmAlive(record) || Date.now() > deadline) return;
    await Bun.sleep(10);
  }
}

/** Refuses a name a live VM already has, and clears what an ended VM of that name left. */
export function claimName(name: string): void {
  const existing = readRecord(name);
  if (existing && vmAlive(existing)) {
    throw new SnowflockError(
      "USAGE",
      `a VM named '${name}' is already running (pid ${existing.pid})`,
      `choose another --name or stop it with \`snowflock kill ${name}\``,
    );
  }
  removeVmFiles(name, { keepLog: false }, runDir());
}
