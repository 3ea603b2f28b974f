/**
 * `snowflock console NAME`: type at a VM's serial console. To a terminal it is interactive (keys go
 * to the guest, its console comes back, Ctrl-] detaches); `--send TEXT` types one line; piped
 * input is sent as it is.
 */
import type { CAC } from "cac";
import { closeSync, openSync, readSync, statSync } from "node:fs";
import { SnowflockError } from "../errors.ts";
import { controlRequest } from "../vmm/control-client.ts";
import { MAX_INPUT_BYTES } from "../vmm/protocol.ts";
import { checkName, vmPaths } from "../run-dir.ts";
import { log, printJson } from "../output.ts";
import { printConsole } from "./logs.ts";

/** Ctrl-]: leaves the interactive console (as telnet's escape). */
const DETACH_KEY = 0x1d;
/** How long typed bytes may wait for room in the guest's receive FIFO before giving up. */
const FULL_FIFO_TIMEOUT_MS = 10_000;

interface ConsoleOptions {
  send?: string;
  json?: boolean;
  raw?: boolean;
}

export function registerConsole(cli: CAC): void {
  cli
    .command("console <name>", "Type at a VM's serial console (interactive; Ctrl-] detaches)")
    .option("--send <text>", "Type this line (with its Enter) and return")
    .option("--raw", "Print control characters as they are")
    .option("--json", "With --send or piped input: print how many bytes the guest took as JSON")
    .example((bin) => `  ${bin} console vm1`)
    .example((bin) => `  ${bin} console vm1 --send 'uname -a' && ${bin} logs vm1`)
    .example((bin) => `  printf 'ls /\\n' | ${bin} console vm1`)
    .action(async (rawName: string, options: ConsoleOptions) => {
      const name = checkName(String(rawName));
      if (options.send !== undefined || !process.stdin.isTTY) {
        const bytes =
          options.send !== undefined ? new TextEncoder().encode(`${options.send}\n`) : new Uint8Array(await Bun.stdin.arrayBuffer());
        const sent = await typeAt(name, bytes);
        if (options.json) printJson({ name, sent });
        return;
      }
      await interactive(name, options.raw === true);
    });
}

/** Sends `bytes` to the guest's UART, waiting while its FIFO is full; returns how many went. */
async function typeAt(name: string, bytes: Uint8Array): Promise<number> {
  let sent = 0;
  let stuckSince = performance.now();
  while (sent < bytes.byteLength) {
    const part = bytes.subarray(sent, sent + MAX_INPUT_BYTES);
    const answer = await controlRequest(name, { op: "input", data: Buffer.from(part).toString("base64") });
    if (!answer.ok) throw new SnowflockError("CONTROL", `VM '${name}' refused console input: ${answer.error}`);
    const accepted = answer.accepted ?? 0;
    sent += accepted;
    if (accepted > 0) stuckSince = performance.now();
    else if (performance.now() - stuckSince > FULL_FIFO_TIMEOUT_MS)
      throw new SnowflockError(
        "VM_STATE",
        `VM '${name}' took ${sent} of ${bytes.byteLength} bytes; its console has not read input for ${FULL_FIFO_TIMEOUT_MS / 1000} s`,
        "is the guest reading its serial console (console=ttyS0)?",
      );
    else await Bun.sleep(20);
  }
  return sent;
}

async function interactive(name: string, raw: boolean): Promise<void> {
  const { log: path } = vmPaths(name);
  // Start at the line being printed, so a waiting prompt shows.
  const size = statSync(path, { throwIfNoEntry: false })?.size ?? 0;
  const from = lastLineStart(path, size);
  log.info(`console of ${name}: Ctrl-] detaches`);
  const stop = new AbortController();
  process.stdin.setRawMode(true);
  const typed: Promise<void>[] = [];
  process.stdin.on("data", (chunk: Buffer) => {
    const detach = chunk.indexOf(DETACH_KEY);
    const keys = detach < 0 ? chunk : chunk.subarray(0, detach);
    if (keys.byteLength > 0) typed.push(typeAt(name, new Uint8Array(keys)).then(() => {}));
    if (detach >= 0) stop.abort();
  });
  try {
    await printConsole(name, { follow: true, raw, from, stop: stop.signal });
    await Promise.all(typed);
  } finally {
    process.stdin.setRawMode(false);
    process.stdin.pause();
  }
  process.stdout.write("\n");
}

/** The offset where the log's last line begins (its last 4 KiB are enough to find it). */
function lastLineStart(path: string, size: number): number {
  if (size === 0) return 0;
  const tail = Buffer.alloc(Math.min(size, 4096));
  const fd = openSync(path, "r");
  try {
    readSync(fd, tail, 0, tail.length, size - tail.length);
  } finally {
    closeSync(fd);
  }
  const end = tail.at(-1) === 0x0a ? tail.length - 1 : tail.length;
  return size - tail.length + tail.lastIndexOf(0x0a, end - 1) + 1;
}
