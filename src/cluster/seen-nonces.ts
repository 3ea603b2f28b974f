/**
 * The nonces of the requests an agent accepted lately, in memory and, for a real agent, in a 0600
 * file in its run directory, so that a request captured before the agent restarts is still refused
 * after it.
 *
 * Why a file rather than refusing requests older than the agent's start: a request's time comes
 * from the sender's clock, and hosts may differ by up to MAX_CLOCK_SKEW_MS. Refusing by start time
 * would refuse honest requests from a host whose clock lags for up to that long after every restart,
 * and any slack for skew would let replays through for as long. A nonce needs keeping only while
 * its request could still pass the clock check (two skew windows, two minutes), so the file stays
 * small: each accepted request appends one line, and the file is rewritten without expired lines
 * when the agent starts and whenever it has grown to twice what is still live.
 */
import { closeSync, constants, existsSync, openSync, writeSync } from "node:fs";
import { readRegularFile } from "../bounded-read.ts";
import { writePrivateFile } from "../sys/private-file.ts";

const LINE = /^(\d+) ([0-9a-f]{32})$/;
/** Past this a journal is not ours to trust (two minutes of requests are far smaller). */
const MAX_JOURNAL_BYTES = 64 * 1024 * 1024;
const COMPACT_AFTER_LINES = 1024;

export class SeenNonces {
  private readonly seen = new Map<string, number>();
  private fd: number | undefined;
  private lines = 0;

  /** Keeps each nonce `keepMs`; without `path`, only as long as this object lives. */
  constructor(
    private readonly keepMs: number,
    private readonly path?: string,
  ) {
    if (path === undefined) return;
    if (existsSync(path)) this.load(path);
    this.expire(Date.now());
    this.rewrite();
  }

  has(nonce: string): boolean {
    return this.seen.has(nonce);
  }

  /** Remembers `nonce`, on disk before the request it came with is served. */
  add(nonce: string, now: number): void {
    this.seen.set(nonce, now);
    if (this.fd === undefined) return;
    writeSync(this.fd, `${now} ${nonce}\n`);
    if (++this.lines > Math.max(COMPACT_AFTER_LINES, 2 * this.seen.size)) this.rewrite();
  }

  /** Drops the nonces kept long enough: their requests fail the clock check by `now`. */
  expire(now: number): void {
    for (const [nonce, at] of this.seen) if (now - at > this.keepMs) this.seen.delete(nonce);
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }

  private load(path: string): void {
    const text = Buffer.from(readRegularFile(path, { what: "agent's replay journal", maxBytes: MAX_JOURNAL_BYTES })).toString("latin1");
    for (const line of text.split("\n")) {
      const match = LINE.exec(line);
      if (match) this.seen.set(match[2]!, Number(match[1]));
    }
  }

  /** Writes the live nonces to a fresh private file in its place; later ones are appended to it. */
  private rewrite(): void {
    this.close();
    writePrivateFile(this.path!, [...this.seen].map(([nonce, at]) => `${at} ${nonce}\n`).join(""));
    this.fd = openSync(this.path!, constants.O_WRONLY | constants.O_APPEND | constants.O_NOFOLLOW);
    this.lines = this.seen.size;
  }
}
