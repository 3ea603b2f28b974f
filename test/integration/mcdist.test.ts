/**
 * mcdist between real network namespaces: a server in h1 multicasts pages of a 4 MiB image to
 * clients in h2 and h3 over a bridge, on both transports (AF_PACKET and UDP multicast). Two
 * clients fetching the same pages cost the server about what one costs; forged frames from h4,
 * lost frames and a killed server never give a client a wrong page or hang it; a peer in h4 without
 * the family key gets nothing from the server and cannot slow it down.
 */
import { expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import type { McdistServerEndpoint } from "../../src/mcdist/server-protocol.ts";
import type { TransportSpec } from "../../src/mcdist/transport.ts";
import type { PeerConfig } from "../support/mcdist-peer.ts";
import { type PeerEvent, type PeerHosts, usePeerHosts } from "../support/mcdist-peers.ts";
import { describeNetns } from "../support/netns.ts";
import { within } from "../support/time.ts";

const PREFIX = `sfmc${process.pid % 1000}`;
const MTU = 1500;
const SIZE = 4 * 1024 * 1024;
const PAGE_COUNT = SIZE / 4096;
const keyHex = randomBytes(32).toString("hex");

/** 500 distinct pages in a scattered but fixed order, like a guest's first faults. */
const PAGES = Array.from({ length: PAGE_COUNT }, (_, i) => (i * 389 + 17) % PAGE_COUNT).slice(0, 500);

type Event = PeerEvent;

/** The test hosts, made by the describe block below. */
let hosts: PeerHosts;
const spawnPeer = (host: number, mode: string, config: PeerConfig) => hosts.spawn(host, mode, config);
const spec = (kind: TransportSpec["kind"], host: number) => hosts.spec(kind, host);

async function runClients(
  kind: TransportSpec["kind"],
  family: number,
  server: McdistServerEndpoint,
  hosts: number[],
  extra: Partial<PeerConfig> = {},
): Promise<Event[]> {
  const clients = hosts.map((h) =>
    spawnPeer(h, "client", {
      transport: spec(kind, h),
      family,
      keyHex,
      mtu: MTU,
      server,
      pageCount: PAGE_COUNT,
      pages: PAGES,
      batch: 32,
      timeoutMs: 5000,
      ...extra,
    }),
  );
  for (const c of clients) expect(await c.next()).toEqual({ ready: true });
  for (const c of clients) c.say("go");
  const results = await Promise.all(clients.map((c) => c.next(60_000)));
  for (const c of clients) c.end();
  await Promise.all(clients.map((c) => c.process.exited));
  return results;
}

function expectEveryPage(result: Event, pages = PAGES.length): void {
  expect(result).toMatchObject({ done: true, pages, missing: 0, mismatches: 0 });
  expect(result.fetched + result.prefetched).toBe(pages);
}

describeNetns("mcdist page transport between network namespaces", () => {
  hosts = usePeerHosts(PREFIX, MTU);

  for (const [index, kind] of (["packet", "udp"] as const).entries()) {
    const family = 0x5f00 + index;

    test(
      `${kind}: two clients on the same pages cost the server about one; forged and lost frames never give ` +
        `a wrong page; a killed server is a clear error`,
      async () => {
        const server = spawnPeer(1, "server", { transport: spec(kind, 1), family, keyHex, mtu: MTU, size: SIZE });
        const endpoint = (await server.next()).endpoint as McdistServerEndpoint;
        expect(endpoint.kind).toBe(kind);
        const stats = async () => {
          server.say("stats");
          return (await server.next()).stats as Event;
        };

        // One client: the baseline.
        const s0 = await stats();
        const [alone] = await runClients(kind, family, endpoint, [2]);
        const s1 = await stats();
        expectEveryPage(alone!);
        const oneClient = s1.bytesSent - s0.bytesSent;

        // Two clients, the same pages, at the same time.
        const pair = await runClients(kind, family, endpoint, [2, 3]);
        const s2 = await stats();
        pair.forEach((r) => expectEveryPage(r));
        const twoClients = s2.bytesSent - s1.bytesSent;
        console.log(
          `${kind}: 1 client: ${oneClient} bytes, ${(PAGES.length / (alone!.elapsedMs / 1000)).toFixed(0)} pages/s; ` +
            `2 clients: ${twoClients} bytes (${(twoClients / oneClient).toFixed(2)}x), ` +
            `${pair.map((r) => (PAGES.length / (r.elapsedMs / 1000)).toFixed(0)).join(" and ")} pages/s, ` +
            `collapsed ${s2.requestsCollapsed - s1.requestsCollapsed}, prefetched ${pair.map((r) => r.prefetched).join("+")}`,
        );
        // Issue 10's bound: at most 1.5x one copy. On a loaded machine one client of the pair may be
        // scheduled late and ask again for pages sent before it read them (seen: 1.32x over udp);
        // a storm shows as 2x and more.
        expect(twoClients).toBeLessThanOrEqual(1.5 * oneClient);

        // Forged PAGE frames (right family, valid CRC, wrong tag) from h4.
        const forger = spawnPeer(4, "forge", { transport: spec(kind, 4), family, keyHex: "00".repeat(32), mtu: MTU, pages: PAGES });
        expect(await forger.next()).toEqual({ ready: true });
        await Bun.sleep(50);
        const forged = await runClients(kind, family, endpoint, [2, 3]);
        forger.end();
        const forgerDone = await forger.next();
        forged.forEach((r) => expectEveryPage(r));
        const forgedDrops = forged.reduce((n, r) => n + (r.stats.framesDropped.forged ?? 0), 0);
        console.log(
          `${kind}: forger sent ${forgerDone.sent} frames; clients dropped ${forgedDrops} forged pages ` +
            `(${forged.map((r) => JSON.stringify(r.stats.framesDropped)).join(", ")})`,
        );
        expect(forgedDrops).toBeGreaterThan(0);

        // 10% of frames lost both ways (sch_netem is not available everywhere: the client drops them).
        const [lossy] = await runClients(kind, family, endpoint, [2], { loss: 0.1 });
        expectEveryPage(lossy!);
        console.log(
          `${kind}: with 10% loss: ${lossy!.lost} frames lost, ${lossy!.stats.retries} retries, ` +
            `${lossy!.stats.unicastFallbacks} unicast fallbacks, ` +
            `${(PAGES.length / (lossy!.elapsedMs / 1000)).toFixed(0)} pages/s`,
        );
        expect(lossy!.lost).toBeGreaterThan(0);
        expect(lossy!.stats.retries).toBeGreaterThan(0);

        // Receiver-driven pacing: the server keeps to a client's reported rate.
        const paced = await runClients(kind, family, endpoint, [2], { rate: 2000, pages: PAGES.slice(0, 200) });
        const s3 = await stats();
        expect(s3.pacedRate).toBe(2000);
        expect(paced[0]!.elapsedMs).toBeGreaterThan(((200 - 16) / 2000) * 1000 * 0.9);

        // The server dies: the next fetch fails with a clear MEMORY error within its timeout, never hangs.
        const victim = spawnPeer(2, "client", {
          transport: spec(kind, 2),
          family,
          keyHex,
          mtu: MTU,
          server: endpoint,
          pageCount: PAGE_COUNT,
          pages: PAGES.slice(0, 32),
          laterPages: [PAGE_COUNT - 1, 3],
          timeoutMs: 1000,
        });
        expect(await victim.next()).toEqual({ ready: true });
        victim.say("go");
        expect(await victim.next()).toMatchObject({ done: true, missing: 0, mismatches: 0 });
        server.process.kill(9);
        await server.process.exited;
        victim.say("fetch");
        const failure = await victim.next(10_000);
        expect(failure.code).toBe("MEMORY");
        expect(failure.error).toMatch(
          new RegExp(
            `^the mcdist server at ${endpoint.address.replace(/\./g, "\\.")} did not answer page ` +
              `${PAGE_COUNT - 1} within 1000 ms \\(\\d+ retries; \\d+ frames received, dropped: \\{.*\\}(; asked the server for \\d+ pages/s)?\\)$`,
          ),
        );
        expect(failure.elapsedMs).toBeGreaterThanOrEqual(1000);
        expect(failure.elapsedMs).toBeLessThan(1300);
        victim.end();
      },
      within(120_000),
    );

    test(
      `${kind}: a keyless peer gets no page, no descriptor chunk and cannot change the server's pace; a client with the key completes`,
      async () => {
        const server = spawnPeer(1, "server", {
          transport: spec(kind, 1),
          family: family + 0x10,
          keyHex,
          mtu: MTU,
          size: SIZE,
          descriptorBytes: 100_000,
        });
        const endpoint = (await server.next()).endpoint as McdistServerEndpoint;
        const asked = new Set(PAGES);
        const secret = Array.from({ length: PAGE_COUNT }, (_, p) => p)
          .filter((p) => !asked.has(p))
          .slice(0, 128);
        const attacker = spawnPeer(4, "keyless", {
          transport: spec(kind, 4),
          family: family + 0x10,
          keyHex: "",
          mtu: MTU,
          server: endpoint,
          pages: secret,
          chunks: [0, 1, 2, 3],
        });
        expect(await attacker.next()).toEqual({ ready: true });
        await Bun.sleep(200);
        const [result] = await runClients(kind, family + 0x10, endpoint, [2], { pages: PAGES.slice(0, 200) });
        attacker.end();
        const attack = await attacker.next();
        // The server reads frames on its own thread: wait (bounded) until it has seen all the attacker sent.
        let stats: Event = {};
        for (const deadline = Date.now() + 5000; Date.now() < deadline; await Bun.sleep(20)) {
          server.say("stats");
          stats = (await server.next()).stats;
          if (stats.framesWrongVersion + stats.requestsForged >= attack.sent) break;
        }
        server.end();
        console.log(
          `${kind}: keyless peer sent ${attack.sent} frames, got ${attack.pagesReceived} pages and ` +
            `${attack.chunksReceived} chunks; server: ${JSON.stringify(stats)}`,
        );
        expectEveryPage(result!, 200);
        expect(attack.sent).toBeGreaterThan(0);
        expect(attack).toMatchObject({ pagesReceived: 0, chunksReceived: 0 });
        // Not one of its frames was heard: no unicast answer, no rate report, no pace; only the client's requests count.
        expect(stats).toMatchObject({ unicastReplies: 0, rateReports: 0, pacedRate: 0, requests: result!.stats.requestsSent });
        expect(stats.framesWrongVersion).toBe(attack.sent / 4);
        expect(stats.requestsForged).toBe((3 * attack.sent) / 4);
      },
      within(60_000),
    );
  }
});
