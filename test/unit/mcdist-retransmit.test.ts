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

  test("a page queued for the group answers every request for it, first or repeated, group or unicast", () => {
    const log = new SendLog(8, RESEND_AFTER);
    expect(log.needsSend(3, "group", 0, -Infinity)).toBe(true);
    log.queued(3, "group");
    expect(log.needsSend(3, "group", 1, -Infinity)).toBe(false);
    expect(log.needsSend(3, "02:00:00:00:00:01", 1, -Infinity)).toBe(false);
    expect(log.sent(3, "group", 2)).toBe(false);
  });

  test("a send after the socket was last found empty answers a request; one before it (a loss) does not", () => {
    const log = new SendLog(8, RESEND_AFTER);
    log.queued(1, "group");
    log.sent(1, "group", 10);
    // Heard in a batch read after a quiet moment at 5: the request may have left before the send at 10.
    expect(log.needsSend(1, "group", 12, 5)).toBe(false);
    // Heard after a quiet moment at 11: it left after the send, so its sender lost the page.
    expect(log.needsSend(1, "group", 12, 11)).toBe(true);
    // Long after a send, a request gets the page again whatever the socket did (a server too busy to be quiet).
    expect(log.needsSend(1, "group", 10 + RESEND_AFTER, 5)).toBe(true);
    log.queued(1, "group");
    expect(log.sent(1, "group", 200)).toBe(true); // a retransmission
  });

  test("unicast: one queued send per page and destination; a group send since makes it unneeded", () => {
    const log = new SendLog(8, RESEND_AFTER);
    const a = "02:00:00:00:00:0a";
    const b = "02:00:00:00:00:0b";
    log.queued(5, a);
    expect(log.needsSend(5, a, 1, -Infinity)).toBe(false);
    expect(log.needsSend(5, b, 1, -Infinity)).toBe(true);
    expect(log.stillNeeded(5, a, 1)).toBe(true);
    log.queued(5, "group");
    log.sent(5, "group", 2);
    expect(log.stillNeeded(5, a, 1)).toBe(false);
    log.dequeued(5, a);
    expect(log.needsSend(5, a, 3, 2.5)).toBe(true);
    log.queued(5, a);
    expect(log.sent(5, a, 4)).toBe(true);
    expect(log.needsSend(5, a, 5, 3)).toBe(false);
  });
});
