/**
 * Clones with memory on demand live as long as their pagers and their round's image: this process
 * (the agent, in a dom0) keeps them (the image only when it is this process's: clones of a parent
 * on another host page from that host's server). Once a second it looks at the domains: a clone
 * gone (exited, destroyed, killed) has its pager stopped; a round with no clone left closes its
 * image. A pager that fails ends its domain (its waiting vCPUs would stay paused for ever) and is
 * remembered with its error for `ls` and `--json`.
 */
import { close } from "../../sys/files.ts";
import type { FaultStats } from "../../memory/fault-counters.ts";
import type { XenPager } from "./pager.ts";

export interface KeptRound {
  parent: string;
  /** The round's image (its memfd), when it is this process's (clones of a parent on another host page from its server). */
  imageFd?: number;
  pagers: XenPager[];
}

export interface KeptClone {
  domid: number;
  parent: string;
  stats: FaultStats;
  /** Why its pager failed (its domain was then destroyed). */
  error?: string;
}

const SWEEP_MS = 1000;

export class Keeper {
  private readonly rounds = new Set<KeptRound>();
  private readonly failures = new Map<number, string>();
  private timer: Timer | undefined;
  /** The sweep under way: a pager's stop can outlast the interval, and a second sweep would end its clone twice. */
  private sweeping: Promise<void> | undefined;

  constructor(
    /** Whether a domain still exists. */
    private readonly alive: (domid: number) => boolean,
    /** Ends a domain whose pager failed. */
    private readonly destroy: (domid: number) => void,
    private readonly log: (line: string) => void,
  ) {}

  keep(round: KeptRound): void {
    this.rounds.add(round);
    for (const pager of round.pagers) {
      pager.failed.then((error) => {
        this.failures.set(pager.domid, error.message);
        this.log(`domain ${pager.domid}: its pager failed (${error.message}); ending it`);
        try {
          this.destroy(pager.domid);
        } catch {
          // gone already
        }
      });
    }
    this.timer ??= setInterval(() => void this.sweep(), SWEEP_MS);
    this.timer.unref();
  }

  /** Stops the pagers of clones that are gone and closes rounds none of whose clones is left (one sweep at a time). */
  sweep(): Promise<void> {
    this.sweeping ??= this.sweepOnce().finally(() => {
      this.sweeping = undefined;
    });
    return this.sweeping;
  }

  private async sweepOnce(): Promise<void> {
    for (const round of this.rounds) {
      const gone = round.pagers.filter((p) => !this.alive(p.domid));
      round.pagers = round.pagers.filter((p) => !gone.includes(p));
      for (const pager of gone) {
        const s = pager.stats();
        this.log(
          `domain ${pager.domid} (a clone of ${round.parent}) ended: ${s.faults} faults, ${s.pagesFetched} pages fetched ` +
            `(${s.pagesPrefetched} prefetched, ${s.eagerPages} before it ran), ${s.pagesZeroFilled} zero-filled; ` +
            `mean fault service ${(s.meanServiceMicros / 1000).toFixed(1)} ms`,
        );
        await pager.stop();
      }
      if (round.pagers.length === 0) this.closeRound(round);
    }
    if (this.rounds.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  /** A round none of whose clones is left: its image goes. */
  private closeRound(round: KeptRound): void {
    if (round.imageFd !== undefined) close(round.imageFd);
    this.rounds.delete(round);
  }

  /** The clones kept now, with what their memory cost so far. */
  clones(): KeptClone[] {
    return [...this.rounds].flatMap((round) =>
      round.pagers.map((p) => ({ domid: p.domid, parent: round.parent, stats: p.stats(), error: this.failures.get(p.domid) })),
    );
  }

  /** Stops every pager and closes every image (the agent is ending: its clones' faults go unanswered, so they are ended first by the caller). */
  async stopAll(): Promise<void> {
    await this.sweeping;
    for (const round of this.rounds) {
      for (const pager of round.pagers) await pager.stop();
      this.closeRound(round);
    }
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
