/**
 * A VM's console as its VMM keeps it: the newest lines in memory (for --json and status) and
 * NAME.log on disk for `snowflock logs`. The guest decides how much it prints, so both are capped
 * (GuestLimits): memory keeps the newest lines that fit, and the log is rotated to NAME.log.1 when
 * the next line would take it past its cap, so a chatty guest costs at most twice that on disk.
 */
import { closeSync, renameSync, rmSync, writeSync } from "node:fs";
import { createPrivateFile } from "../sys/private-file.ts";
import type { GuestLimits } from "../guest/limits.ts";

/** What a kept line costs beyond its bytes (the string and array slot), so empty lines count too. */
const LINE_OVERHEAD = 64;

export class ConsoleLog {
  private recent: Array<{ line: string; cost: number }> = [];
  /** Index of the oldest kept line in `recent` (dropped ones before it are compacted away now and then). */
  private first = 0;
  private recentBytes = 0;
  private fd: number | undefined;
  private logBytes = 0;
  /** What partial() already wrote of the line being printed. */
  private partialWritten = "";
  /** Every line the guest printed, kept or not. */
  total = 0;

  constructor(
    private readonly path: string,
    private readonly limits: Pick<GuestLimits, "consoleMemory" | "consoleLog">,
  ) {
    rmSync(`${path}.1`, { force: true });
    this.fd = createPrivateFile(path);
  }

  /** The current line so far: the log shows it now (a prompt); add() writes only the rest. */
  partial(text: string): void {
    if (!text.startsWith(this.partialWritten)) return;
    this.append(Buffer.from(text.slice(this.partialWritten.length)));
    this.partialWritten = text;
  }

  add(line: string): void {
    // A line that does not go on from the partial one (another vCPU's) starts a line of its own.
    const continues = line.startsWith(this.partialWritten);
    const rest = continues ? line.slice(this.partialWritten.length) : `${this.partialWritten ? "\n" : ""}${line}`;
    this.partialWritten = "";
    this.total++;
    const cost = Buffer.byteLength(line) + 1 + LINE_OVERHEAD;
    this.recent.push({ line, cost });
    this.recentBytes += cost;
    while (this.recentBytes > this.limits.consoleMemory && this.first < this.recent.length) {
      this.recentBytes -= this.recent[this.first++]!.cost;
    }
    if (this.first >= 64 && this.first * 2 > this.recent.length) {
      this.recent = this.recent.slice(this.first);
      this.first = 0;
    }
    this.append(Buffer.from(`${rest}\n`));
  }

  /** The newest lines, oldest first. */
  lines(): string[] {
    return this.recent.slice(this.first).map((r) => r.line);
  }

  /** Lines printed but no longer in `lines()`. */
  get dropped(): number {
    return this.total - (this.recent.length - this.first);
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }

  private append(bytes: Uint8Array): void {
    if (this.fd === undefined) return;
    try {
      if (this.logBytes > 0 && this.logBytes + bytes.byteLength > this.limits.consoleLog) {
        closeSync(this.fd);
        this.fd = undefined;
        renameSync(this.path, `${this.path}.1`);
        this.fd = createPrivateFile(this.path);
        this.logBytes = 0;
      }
      writeSync(this.fd, bytes);
      this.logBytes += bytes.byteLength;
    } catch {
      // The log is a convenience (a full disk, a removed run directory): the VM goes on without it.
      this.close();
    }
  }
}
