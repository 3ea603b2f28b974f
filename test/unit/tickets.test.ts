/**
 * A family's ticket book (src/cluster/tickets.ts), the part of the Impromptu Cluster API every
 * backend shares, against stand-in members whose ends the test decides (a unit test of this
 * module alone; real families use it in the integration tests).
 */
import { describe, expect, test } from "bun:test";
import { type TicketMembers, Tickets } from "../../src/cluster/tickets.ts";
import { GuestError } from "../../src/guest/hypercalls.ts";

function members(): TicketMembers & { statuses: Map<number, number>; ended: number[]; probes: number } {
  const statuses = new Map<number, number>();
  const m = {
    statuses,
    ended: [] as number[],
    probes: 0,
    status: (id: number) => statuses.get(id),
    probe: async () => {
      m.probes++;
    },
    end: async (id: number) => {
      m.ended.push(id);
      statuses.set(id, -9);
    },
  };
  return m;
}

const grant = (tickets: Tickets<string>, granted: number, extra = "rooms") => tickets.grant(async () => ({ granted, extra }));

describe("a family's tickets", () => {
  test("each grants what was decided; past the limit SF_EDQUOT, counting those still being decided", async () => {
    const tickets = new Tickets<string>(2, members());
    let decide!: (v: { granted: number; extra: string }) => void;
    const slow = tickets.grant(() => new Promise((resolve) => (decide = resolve)));
    expect(await grant(tickets, 3)).toEqual({ ticket: 1, granted: 3 });
    expect(await grant(tickets, 1)).toBe(GuestError.EDQUOT); // one granted, one being decided
    decide({ granted: 2, extra: "later" });
    expect(await slow).toEqual({ ticket: 2, granted: 2 });
  });

  test("a ticket clones once, with IDs 1 to granted; an unknown one is SF_EINVAL", async () => {
    const tickets = new Tickets<string>(4, members());
    await grant(tickets, 3, "h1+h2");
    expect(tickets.startClones(1n)).toEqual({ cloneIds: [1, 2, 3], extra: "h1+h2" });
    expect(tickets.startClones(1n)).toBe(GuestError.EBUSY);
    for (const id of [0n, 2n, -1n, 2n ** 64n]) expect(tickets.startClones(id)).toBe(GuestError.EINVAL);
  });

  test("join waits for every clone, returns their statuses by clone ID and retires the ticket", async () => {
    const m = members();
    const tickets = new Tickets<string>(1, m);
    await grant(tickets, 2);
    expect(tickets.joinable(1n)).toBe(GuestError.EINVAL); // not cloned yet
    tickets.startClones(1n);
    expect(tickets.joinable(1n)).toEqual({ clones: 2 });
    expect([...tickets.awaited()]).toEqual([1, 2]);
    const joined = tickets.join(1n);
    expect(tickets.joinable(1n)).toBe(GuestError.EBUSY); // a join is under way
    m.statuses.set(2, 42);
    await Bun.sleep(120);
    m.statuses.set(1, 41);
    expect(await joined).toEqual([41, 42]);
    expect(tickets.joinable(1n)).toBe(GuestError.EBUSY); // retired
    expect(tickets.startClones(1n)).toBe(GuestError.EBUSY);
    expect(await tickets.kill(1n)).toBe(0n);
    expect([...tickets.awaited()]).toEqual([]);
    // A retired ticket no longer counts against the limit.
    expect(await grant(tickets, 1)).toEqual({ ticket: 2, granted: 1 });
  });

  test("a join returns as soon as the family says a member ended, not at its next look", async () => {
    const m = members();
    const tickets = new Tickets<string>(1, m, 3_600_000); // it would look again only in an hour
    await grant(tickets, 2);
    tickets.startClones(1n);
    const joined = tickets.join(1n);
    m.statuses.set(1, 3);
    tickets.memberEnded();
    await Bun.sleep(0);
    m.statuses.set(2, 4);
    tickets.memberEnded();
    expect(await joined).toEqual([3, 4]);
  });

  test("a join that waits long asks after its members (probe)", async () => {
    const m = members();
    const tickets = new Tickets<string>(1, m);
    await grant(tickets, 1);
    tickets.startClones(1n);
    const joined = tickets.join(1n);
    await Bun.sleep(1200);
    m.statuses.set(1, 0);
    expect(await joined).toEqual([0]);
    expect(m.probes).toBeGreaterThanOrEqual(1);
  });

  test("kill ends the clones still running, and only those", async () => {
    const m = members();
    const tickets = new Tickets<string>(2, m);
    await grant(tickets, 3);
    expect(await tickets.kill(1n)).toBe(GuestError.EINVAL); // nothing cloned yet
    tickets.startClones(1n);
    m.statuses.set(2, 7);
    expect(await tickets.kill(1n)).toBe(0n);
    expect(m.ended).toEqual([1, 3]);
    expect(await tickets.join(1n)).toEqual([-9, 7, -9]);
    expect(tickets.open()).toEqual([]);
  });
});
