/**
 * mcdist with more clients than cores (issue 10, item 11): one server in h1 and eight slow clients
 * spread over h2–h4 fetch overlapping page sets of an 8 MiB image, the way clones of one family
 * fault on shared and on their own pages. The nine processes share two emulated cores
 * (time-share.ts: the others are stopped), and each client has a small socket buffer and burns
 * CPU between fetches, like clones on a busy host, so queues and losses build up. The
 * server must still send about one copy of what the family needed: a retransmission storm (every
 * client re-asking for pages already in flight, unicast answers repeated per retry) shows as
 * bytes sent far beyond the distinct pages' bytes, and in the storm counters.
 */
import { expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { encodeFrame, fragment, FrameType } from "../../src/mcdist/frame.ts";
import { PAGE_OBJECT_SIZE } from "../../src/mcdist/messages.ts";
import type { McdistServerEndpoint } from "../../src/mcdist/server-protocol.ts";
import { PAGE_SIZE } from "../../src/guest-memory/layout.ts";
import { usePeerHosts } from "../support/mcdist-peers.ts";
import { describeNetns } from "../support/netns.ts";
import { Rng } from "../support/rng.ts";
import { timeShare } from "../support/time-share.ts";
import { within } from "../support/time.ts";

const PREFIX = `sfst${process.pid % 1000}`;
const MTU = 1500;
const SIZE = 8 * 1024 * 1024;
const PAGE_COUNT = SIZE / PAGE_SIZE;
const CLIENTS = 8;
const SHARED = 256;
const OWN = 160;
/** Of its neighbour's own pages, a client also touches this many. */
const BORROWED = 64;
/** The most the server may send, per distinct page the family fetched, in page bytes. */
const MAX_SENT_PER_PAGE = 1.5;
const keyHex = randomBytes(32).toString("hex");

/** Client i's pages, in its own order: the shared ones, its own slice, part of the next client's. */
function pagesOf(client: number): number[] {
  const scattered = Array.from({ length: PAGE_COUNT }, (_, i) => (i * 389 + 17) % PAGE_COUNT);
  const slice = (k: number) => scattered.slice(SHARED + (k % CLIENTS) * OWN, SHARED + (k % CLIENTS) * OWN + OWN);
  const pages = [...scattered.slice(0, SHARED), ...slice(client), ...slice(client + 1).slice(0, BORROWED)];
  return new Rng(client + 1).shuffle(pages);
}

/** Bytes on the wire (frame headers included) for one page sent once at MTU: the framing overhead. */
function wireBytesPerPage(): number {
  return fragment(FrameType.PAGE, 1, 1, 0n, new Uint8Array(PAGE_OBJECT_SIZE), MTU).reduce((sum, f) => sum + encodeFrame(f).byteLength, 0);
}

describeNetns("mcdist under load: more clients than cores", () => {
  const hosts = usePeerHosts(PREFIX, MTU);

  test(
    "8 slow clients over 3 hosts: the server sends at most 1.5x the distinct pages' bytes, every page correct",
    async () => {
      const family = 0x57a0;
      const server = hosts.spawn(1, "server", { transport: hosts.spec("packet", 1), family, keyHex, mtu: MTU, size: SIZE });
      const endpoint = (await server.next()).endpoint as McdistServerEndpoint;
      const plans = Array.from({ length: CLIENTS }, (_, i) => pagesOf(i));
      const clients = plans.map((pages, i) =>
        hosts.spawn(2 + (i % 3), "client", {
          transport: hosts.spec("packet", 2 + (i % 3)),
          family,
          keyHex,
          mtu: MTU,
          server: endpoint,
          pageCount: PAGE_COUNT,
          pages,
          batch: 32,
          timeoutMs: within(15_000),
          rate: "measured",
          burnMs: 2,
          bufferBytes: 256 * 1024,
        }),
      );
      for (const c of clients) expect(await c.next(within(20_000))).toEqual({ ready: true });
      // Nine tasks (the server and eight clients) on two emulated cores.
      const share = timeShare(
        [server, ...clients].map((p) => p.process.pid),
        { cores: 2, sliceMs: 10 },
      );
      for (const c of clients) c.say("go");
      const results = await Promise.all(clients.map((c) => c.next(within(300_000)))).finally(() => share.stop());
      for (const c of clients) c.end();
      server.say("stats");
      const stats = (await server.next()).stats;
      server.end();

      const distinct = new Set(plans.flat()).size;
      const perPage = wireBytesPerPage();
      const ratio = stats.bytesSent / (distinct * perPage);
      const retries = results.reduce((n, r) => n + r.stats.retries, 0);
      console.log(
        `storm: ${distinct} distinct pages (${perPage} wire bytes each); server sent ${stats.bytesSent} bytes = ${ratio.toFixed(2)}x, ` +
          `${stats.pagesSent} pages; client retries ${retries}; slowest client ` +
          `${Math.max(...results.map((r) => r.elapsedMs)).toFixed(0)} ms; ` +
          `server ${JSON.stringify(stats)}`,
      );
      results.forEach((r, i) => {
        expect(r).toMatchObject({ done: true, pages: plans[i]!.length, missing: 0, mismatches: 0 });
        expect(r.fetched + r.prefetched).toBe(plans[i]!.length);
      });
      // Every page sent is a distinct one the family asked for, or a retransmission (counted).
      expect(stats.pagesSent - stats.pagesResent).toBe(distinct);
      expect(stats.bytesSent).toBeLessThanOrEqual(MAX_SENT_PER_PAGE * distinct * perPage);
    },
    within(400_000),
  );
});
