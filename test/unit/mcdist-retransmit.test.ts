/**
 * The two halves of mcdist's answer to a retransmission storm: the client's retransmission timeout
 * (learnt from round trips, backing off while nothing comes) and the server's send log (a request
 * costs a send only when its sender cannot have had the page yet).
 */
import { describe, expect, test } from "bun:test";
import { INITIAL_RTO_MS, MIN_RTO_MS, RetransmitTimer } from "../../src/mcdist/retransmit-timer.ts";
import { SendLog } from "../../src/mcdist/send-log.ts";

describe("retransmission timeout", () => {
  test("starts at the initial wait, follows measured round trips, never below the minimum", () => {
    const timer = new RetransmitTimer(10_000);
    expect(timer.timeoutMs).toBe(Math.max(MIN_RTO_MS, INITIAL_RTO_MS));
    timer.sample(400);
    expect(timer.timeoutMs).toBe(400 + 4 * 200); // RFC 6298: SRTT + 4 RTTVAR after the first sample
    for (let i = 0; i < 50; i++) timer.sample(400);
    expect(timer.timeoutMs).toBeGreaterThanOrEqual(400);
    expect(timer.timeoutMs).toBeLessThan(500);
    for (let i = 0; i < 50; i++) timer.sample(0);
    expect(timer.timeoutMs).toBe(MIN_RTO_MS);
  });

  test("doubles on each timeout up to the maximum; pages arriving or a fresh sample bring it back", () => {
    const timer = new RetransmitTimer(1000);
    for (let i = 0; i < 20; i++) timer.sample(100);
    const base = timer.timeoutMs;
    timer.backOff();
    expect(timer.timeoutMs).toBe(Math.min(1000, 2 * base));
    for (let i = 0; i < 10; i++) timer.backOff();
    expect(timer.timeoutMs).toBe(1000);
    timer.progress();
    expect(timer.timeoutMs).toBe(base);
    timer.backOff();
    timer.sample(100);
    expect(timer.timeoutMs).toBeLessThanOrEqual(base);
  });
});

describe("send log", () => {
  const RESEND_AFTER = 100;
  /** The group sequence number of the sends below (requesters heard from 0 on, unless a test says otherwise). */
  const SEQUENCE = 7;

  test("a page queued for the group answers every request for it, first or repeated, group or unicast", () => {
    const log = new SendLog(8, RESEND_AFTER);
    expect(log.needsSend(3, "group", 0, -Infinity, 0)).toBe(true);
    log.queued(3, "group");
    expect(log.needsSend(3, "group", 1, -Infinity, 0)).toBe(false);
    expect(log.needsSend(3, "02:00:00:00:00:01", 1, -Infinity, 0)).toBe(false);
    expect(log.sent(3, "group", 2, SEQUENCE)).toBe(false);
  });

  test("a send after the socket was last found empty answers a request; one before it (a loss) does not", () => {
    const log = new SendLog(8, RESEND_AFTER);
    log.queued(1, "group");
    log.sent(1, "group", 10, SEQUENCE);
    // Heard in a batch read after a quiet moment at 5: the request may have left before the send at 10.
    expect(log.needsSend(1, "group", 12, 5, 0)).toBe(false);
    // Heard after a quiet moment at 11: it left after the send, so its sender lost the page.
    expect(log.needsSend(1, "group", 12, 11, 0)).toBe(true);
    // Long after a send, a request gets the page again whatever the socket did (a server too busy to be quiet).
    expect(log.needsSend(1, "group", 10 + RESEND_AFTER, 5, 0)).toBe(true);
    log.queued(1, "group");
    expect(log.sent(1, "group", 200, SEQUENCE)).toBe(true); // a retransmission
  });

  test("unicast: one queued send per page and destination; a group send since makes it unneeded", () => {
    const log = new SendLog(8, RESEND_AFTER);
    const a = "02:00:00:00:00:0a";
    const b = "02:00:00:00:00:0b";
    log.queued(5, a);
    expect(log.needsSend(5, a, 1, -Infinity, 0)).toBe(false);
    expect(log.needsSend(5, b, 1, -Infinity, 0)).toBe(true);
    expect(log.stillNeeded(5, a, 1)).toBe(true);
    log.queued(5, "group");
    log.sent(5, "group", 2, SEQUENCE);
    expect(log.stillNeeded(5, a, 1)).toBe(false);
    log.dequeued(5, a);
    expect(log.needsSend(5, a, 3, 2.5, 0)).toBe(true);
    log.queued(5, a);
    expect(log.sent(5, a, 4, SEQUENCE)).toBe(true);
    expect(log.needsSend(5, a, 5, 3, 0)).toBe(false);
  });

  test("a recent group send numbered before the first the requester heard went out before it listened: sent again", () => {
    const log = new SendLog(8, RESEND_AFTER);
    log.queued(2, "group");
    log.sent(2, "group", 10, 41);
    // A sibling listening since 30 got it; one that first heard 42 (its order came later) did not.
    expect(log.needsSend(2, "group", 12, 5, 30)).toBe(false);
    expect(log.needsSend(2, "group", 12, 5, 41)).toBe(false);
    expect(log.needsSend(2, "group", 12, 5, 42)).toBe(true);
    // One that heard nothing yet cannot have had it.
    expect(log.needsSend(2, "group", 12, 5, undefined)).toBe(true);
    // Numbers wrap at 31 bits: heard from near the top, a send numbered 3 came after.
    log.sent(2, "group", 20, 3);
    expect(log.needsSend(2, "group", 21, 15, 0x7ffffff0)).toBe(false);
    // Queued, it answers everyone, however late they joined.
    log.queued(2, "group");
    expect(log.needsSend(2, "group", 22, 15, undefined)).toBe(false);
  });
});
