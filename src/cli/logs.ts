/**
 * `snowflock logs NAME`: a VM's console, as it printed it. To a terminal, control characters but
 * line breaks and tabs are shown escaped (a guest must not drive the operator's terminal); piped,
 * or with --raw, the bytes go out as they are.
 */
import type { CAC } from "cac";
import { existsSync, openSync, readSync, closeSync, fstatSync, statSync } from "node:fs";
import { SnowflockError } from "../errors.ts";
import { checkName, readRecord, vmAlive, vmPaths } from "../run-dir.ts";
import { printable } from "../output.ts";

/** Writes console bytes as they are, or (to a terminal) decoded with control characters escaped. */
function consoleWriter(raw: boolean): (bytes: Uint8Array) => void {
  if (raw) return (bytes) => void process.stdout.write(bytes);
  const decoder = new TextDecoder();
  return (bytes) => void process.stdout.write(decoder.decode(bytes, { stream: true }).split("\n").map(printable).join("\n"));
}

function alive(name: string): boolean {
  const record = readRecord(name);
  return record !== undefined && vmAlive(record);
}

export function registerLogs(cli: CAC): void {
  cli
    .command("logs <name>", "Print a VM's console output")
    .option("-f, --follow", "Keep printing new lines until the VM stops")
    .option("--raw", "Print control characters as they are, also to a terminal")
    .example((bin) => `  ${bin} logs web --follow`)
    .action(async (name: string, options: { follow?: boolean; raw?: boolean }) => {
      await printConsole(checkName(String(name)), { follow: options.follow === true, raw: options.raw === true });
    });
}

/**
 * Prints a VM's console log from `from` (a byte offset; default the start), and with `follow`
 * what it prints next until it stops or `stop` is aborted.
 */
export async function printConsole(
  name: string,
  options: { follow: boolean; raw: boolean; from?: number; stop?: AbortSignal },
): Promise<void> {
  const { log: path } = vmPaths(name);
  if (!existsSync(path))
    throw new SnowflockError("NOT_FOUND", `no console log for a VM named '${name}'`, "`snowflock ls` lists the running VMs");
  let fd = openSync(path, "r");
  const chunk = Buffer.alloc(64 * 1024);
  const write = consoleWriter(options.raw || !process.stdout.isTTY);
  let position = options.from ?? 0;
  try {
    while (!options.stop?.aborted) {
      const n = readSync(fd, chunk, 0, chunk.length, position);
      if (n > 0) {
        write(chunk.subarray(0, n));
        position += n;
        continue;
      }
      // Once the VM is gone, stop at the end of what is there (also when the log shrank meanwhile).
      if (!options.follow || !alive(name)) {
        if (fstatSync(fd).size <= position) break;
        continue;
      }
      // The VMM rotated its log (to NAME.log.1, at its cap): finish the old file, go on in the new one.
      const current = statSync(path, { throwIfNoEntry: false });
      if (current && current.ino !== fstatSync(fd).ino) {
        for (let n: number; (n = readSync(fd, chunk, 0, chunk.length, position)) > 0; position += n) write(chunk.subarray(0, n));
        closeSync(fd);
        fd = openSync(path, "r");
        position = 0;
        continue;
      }
      await Bun.sleep(50);
    }
  } finally {
    closeSync(fd);
  }
}
