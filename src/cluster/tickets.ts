/**
 * A family's tickets, on any backend: how many clones each grants, which clone IDs it made, and
 * joining or ending them (sf_request_ticket, sf_clone, sf_join, sf_kill in guest/ABI.md). How a
 * member runs and ends is the family's business (`TicketMembers`); the rules are kept here: a
 * ticket clones once, is joined once and then retired, and at most `limit` are held at a time.
 */
import { SnowflockError } from "../errors.ts";
import { GuestError } from "../guest/hypercalls.ts";
import { settledOrAfter } from "../timeouts.ts";
import type { GuestErrorCode } from "./guest-calls.ts";

/** The family's members, as the tickets need them. */
export interface TicketMembers {
  /** A clone's exit status (or CloneStatus) once it has ended; undefined while it runs. */
  status(cloneId: number): number | undefined;
  /** Asks after running members that could vanish without a word (on other hosts). */
  probe(cloneIds: number[]): Promise<void>;
  /** Ends a running member. */
  end(cloneId: number): Promise<void>;
}

interface Ticket<Extra> {
  granted: number;
  extra: Extra;
  cloneIds: number[] | undefined;
  joined: boolean;
}

/** How often a join looks again without being woken (memberEnded): for ends nobody reports, e.g. a local VM that died. */
const JOIN_POLL_MS = 50;
/** How often a join asks after members still running (probe). */
const PROBE_MS = 1000;

export class Tickets<Extra = undefined> {
  private tickets = new Map<number, Ticket<Extra>>();
  private next = 1;
  /** When openEnded() last asked after running members. */
  private probedAt = 0;
  /** Tickets being granted (the hosts are asked first): they count against the limit too. */
  private pending = 0;
  /** Resolved (and renewed) when a member ends: joins waiting look at once, not at their next poll. */
  private ended = Promise.withResolvers<void>();

  constructor(
    private readonly limit: number,
    private readonly members: TicketMembers,
    private readonly joinPollMs = JOIN_POLL_MS,
  ) {}

  /** A new ticket for as many clones as `decide` grants (it may ask the hosts), or SF_EDQUOT past the limit. */
  async grant(decide: () => Promise<{ granted: number; extra: Extra }>): Promise<{ ticket: number; granted: number } | GuestErrorCode> {
    if (this.tickets.size + this.pending >= this.limit) return GuestError.EDQUOT;
    this.pending++;
    let decided: { granted: number; extra: Extra };
    try {
      decided = await decide();
    } finally {
      this.pending--;
    }
    const ticket = this.next++;
    this.tickets.set(ticket, { ...decided, cloneIds: undefined, joined: false });
    return { ticket, granted: decided.granted };
  }

  /** A ticket held, or `retired`: it was joined, and dropped so that tickets cannot pile up. */
  private lookup(id: bigint): Ticket<Extra> | "retired" | undefined {
    if (id < 1n || id >= BigInt(this.next)) return undefined;
    return this.tickets.get(Number(id)) ?? "retired";
  }

  /**
   * The ticket's clone IDs, now assigned — `first` to `first` + granted - 1 (on KVM from 1; on Xen
   * after the clones of earlier rounds still running) — and what was decided with it; or why it cannot clone.
   */
  startClones(id: bigint, first = 1): { cloneIds: number[]; extra: Extra } | GuestErrorCode {
    const ticket = this.lookup(id);
    if (!ticket) return GuestError.EINVAL;
    if (ticket === "retired" || ticket.cloneIds) return GuestError.EBUSY;
    ticket.cloneIds = Array.from({ length: ticket.granted }, (_, i) => first + i);
    return { cloneIds: ticket.cloneIds, extra: ticket.extra };
  }

  joinable(id: bigint): { clones: number } | GuestErrorCode {
    const ticket = this.lookup(id);
    if (ticket === "retired") return GuestError.EBUSY;
    if (!ticket?.cloneIds) return GuestError.EINVAL;
    if (ticket.joined) return GuestError.EBUSY;
    return { clones: ticket.cloneIds.length };
  }

  /** Waits for the clones of a joinable ticket (joinable()) to end, then retires it; their statuses by clone ID. */
  async join(id: bigint): Promise<number[]> {
    const ticket = this.lookup(id);
    if (typeof ticket !== "object" || !ticket.cloneIds || ticket.joined)
      throw new SnowflockError("INTERNAL", `ticket ${id} is not joinable`);
    ticket.joined = true;
    const ids = ticket.cloneIds;
    let probedAt = performance.now();
    while (ids.some((cloneId) => this.members.status(cloneId) === undefined)) {
      await settledOrAfter(this.ended.promise, this.joinPollMs);
      if (performance.now() - probedAt < PROBE_MS) continue;
      await this.members.probe(ids);
      probedAt = performance.now();
    }
    this.tickets.delete(Number(id));
    return ids.map((cloneId) => this.members.status(cloneId)!);
  }

  /** The family tells that a member ended (its status is known now): a join waiting for it returns at once. */
  memberEnded(): void {
    this.ended.resolve();
    this.ended = Promise.withResolvers<void>();
  }

  /** Ends the ticket's clones still running (none for a joined ticket: they all ended). */
  async kill(id: bigint): Promise<bigint> {
    const ticket = this.lookup(id);
    if (ticket === "retired") return 0n;
    if (!ticket?.cloneIds) return GuestError.EINVAL;
    await Promise.all(
      ticket.cloneIds.filter((cloneId) => this.members.status(cloneId) === undefined).map((cloneId) => this.members.end(cloneId)),
    );
    return 0n;
  }

  /** Clone IDs a ticket not yet retired still waits for (a join in progress included). */
  awaited(): Set<number> {
    return new Set([...this.tickets.values()].flatMap((t) => t.cloneIds ?? []));
  }

  /**
   * Whether every clone of the tickets cloned and not joined has ended: a join of them would not
   * wait. Asks after running members (probe) at most once every PROBE_MS, for callers that poll.
   */
  async openEnded(): Promise<boolean> {
    const ids = this.open().flatMap((t) => t.cloneIds);
    const running = ids.filter((cloneId) => this.members.status(cloneId) === undefined);
    if (running.length === 0) return true;
    if (performance.now() - this.probedAt < PROBE_MS) return false;
    this.probedAt = performance.now();
    await this.members.probe(running);
    return running.every((cloneId) => this.members.status(cloneId) !== undefined);
  }

  /** Ends the running clones of every ticket cloned and not joined; how many it ended. */
  async killOpen(): Promise<number> {
    const running = this.open()
      .flatMap((t) => t.cloneIds)
      .filter((cloneId) => this.members.status(cloneId) === undefined);
    await Promise.all(running.map((cloneId) => this.members.end(cloneId)));
    return running.length;
  }

  /** Tickets cloned and not yet joined, oldest first, with their clone IDs. */
  open(): Array<{ ticket: bigint; cloneIds: number[] }> {
    return [...this.tickets].flatMap(([id, t]) => (t.cloneIds && !t.joined ? [{ ticket: BigInt(id), cloneIds: t.cloneIds }] : []));
  }
}
