/**
 * Where running VMs are found: each VMM process keeps, under $SNOWFLOCK_RUN_DIR (default
 * /run/snowflock for root, $XDG_RUNTIME_DIR/snowflock otherwise), NAME.sock (its control socket), NAME.json (what it runs) and
 * NAME.log (its console). Other commands reach a VM by name through these. Test hosts (`cluster
 * up`) each have a run directory one level below this one; commands run outside every test host
 * see their VMs too.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SnowflockError } from "../errors.ts";
import { scaledTimeout } from "../timeouts.ts";

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
}

export function runDir(): string {
  if (process.env.SNOWFLOCK_RUN_DIR) return process.env.SNOWFLOCK_RUN_DIR;
  if (process.getuid?.() === 0) return "/run/snowflock";
  return join(process.env.XDG_RUNTIME_DIR || tmpdir(), `snowflock-${process.getuid?.() ?? "user"}`);
}

/** The directories VMs may be found in: the run directory, then the test hosts' below it. */
function searchedDirs(): string[] {
  const dir = runDir();
  if (!existsSync(dir)) return [dir];
  const below = readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => join(dir, e.name));
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
    throw new SnowflockError("USAGE", `bad VM name '${name}'`, "use up to 63 letters, digits, '.', '_' or '-', starting with a letter or digit");
  }
  return name;
}

export function ensureRunDir(): string {
  const dir = runDir();
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (error) {
    throw new SnowflockError("USAGE", `cannot create the run directory ${dir}: ${(error as Error).message}`, "set SNOWFLOCK_RUN_DIR to a writable directory");
  }
  return dir;
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
      if (record && processAlive(record.pid)) records.push(record);
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

/** Parents first, each followed by its clones; `depth` says how far down the family tree. */
export function familyOrder<R extends Pick<VmRecord, "name" | "parent" | "cloneId">>(records: R[]): Array<R & { depth: number }> {
  const names = new Set(records.map((r) => r.name));
  const roots = records.filter((r) => !r.parent || !names.has(r.parent));
  const walk = (r: R, depth: number): Array<R & { depth: number }> => [
    { ...r, depth },
    ...records.filter((c) => c.parent === r.name).sort((a, b) => (a.cloneId ?? 0) - (b.cloneId ?? 0)).flatMap((c) => walk(c, depth + 1)),
  ];
  return roots.flatMap((r) => walk(r, 0));
}

/** The record of VM `name`; undefined when there is none or the file is no VM record. */
export function readRecord(name: string, dir?: string): VmRecord | undefined {
  let value: Partial<VmRecord>;
  try {
    value = JSON.parse(readFileSync(vmPaths(name, dir).record, "utf8"));
  } catch {
    return undefined;
  }
  return value?.name === name && Number.isInteger(value.pid) ? (value as VmRecord) : undefined;
}

export function writeRecord(record: VmRecord): void {
  writeFileSync(vmPaths(record.name, runDir()).record, `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 });
}

export function removeVmFiles(name: string, { keepLog }: { keepLog: boolean }, dir?: string): void {
  const paths = vmPaths(name, dir);
  rmSync(paths.socket, { force: true });
  rmSync(paths.record, { force: true });
  if (!keepLog) rmSync(paths.log, { force: true });
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
    if (!record || record.parent !== parent || !processAlive(record.pid) || Date.now() > deadline) return;
    await Bun.sleep(10);
  }
}

/** Refuses a name a live VM already has. */
export function claimName(name: string): void {
  const existing = readRecord(name);
  if (existing && processAlive(existing.pid)) {
    throw new SnowflockError("USAGE", `a VM named '${name}' is already running (pid ${existing.pid})`, `choose another --name or stop it with \`snowflock kill ${name}\``);
  }
  removeVmFiles(name, { keepLog: false }, runDir());
}
