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
  /** Every line the guest printed, kept or not. */
  total = 0;

  constructor(
    private readonly path: string,
    private readonly limits: Pick<GuestLimits, "consoleMemory" | "consoleLog">,
  ) {
    rmSync(`${path}.1`, { force: true });
    this.fd = createPrivateFile(path);
  }

  add(line: string): void {
    const bytes = Buffer.from(`${line}\n`);
    this.total++;
    this.recent.push({ line, cost: bytes.byteLength + LINE_OVERHEAD });
    this.recentBytes += bytes.byteLength + LINE_OVERHEAD;
    while (this.recentBytes > this.limits.consoleMemory && this.first < this.recent.length) {
      this.recentBytes -= this.recent[this.first++]!.cost;
    }
    if (this.first >= 64 && this.first * 2 > this.recent.length) {
      this.recent = this.recent.slice(this.first);
      this.first = 0;
    }
    this.append(bytes);
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
