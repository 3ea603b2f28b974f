/**
 * mcdist client and server in one process over UDP multicast on the loopback interface (no root,
 * no namespaces): right pages, prefetch of a sibling's pages, the wake fd, a silent server, and
 * a server that hears each tagged frame once and keeps its pace above the floor.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { McdistClient, type McdistClientOptions, MIN_MEASURED_PAGES } from "../../src/mcdist/client.ts";
import { newSender, sealControl } from "../../src/mcdist/control.ts";
import { encodeFrame, FrameType } from "../../src/mcdist/frame.ts";
import {
  encodePageObject,
  encodeRate,
  encodeRequest,
  MAX_REQUEST_PAGES,
  MIN_PACED_RATE,
  PAGE_OBJECT_SIZE,
} from "../../src/mcdist/messages.ts";
import { type McdistServer, type McdistServerStats, startMcdistServer } from "../../src/mcdist/server.ts";
import { RATE_REPORT_TTL_MS } from "../../src/mcdist/server-protocol.ts";
import { openTransport, parseUdpEndpoint, type TransportSpec } from "../../src/mcdist/transport.ts";
import { openUdpSocket, sendUdp } from "../../src/sys/udp.ts";
import { Woken } from "../../src/sys/poll-retrying.ts";
import { EFD_CLOEXEC, EFD_NONBLOCK, MFD_CLOEXEC } from "../../src/sys/constants.ts";
import { close, eventfd, memfdCreate, pwrite, write } from "../../src/sys/files.ts";

const PAGES = 256;
const image = Uint8Array.from({ length: PAGES * 4096 }, (_, i) => (i * 7 + (i >> 12)) & 0xff);
const page = (p: number) => image.subarray(p * 4096, (p + 1) * 4096);
const key = Uint8Array.from({ length: 32 }, (_, i) => 100 + i);
const family = 0x10c0 + (process.pid % 1000);
const transport: TransportSpec = { kind: "udp", interface: "lo", address: "127.0.0.1", port: 20000 + (process.pid % 30000) };
let imageFd: number;
let server: McdistServer;
const clients: McdistClient[] = [];

function open(extra: Partial<McdistClientOptions> = {}): McdistClient {
  const client = McdistClient.open({
    transport,
    server: server.endpoint,
    family,
    key,
    pageCount: PAGES,
    mtu: 1500,
    timeoutMs: 2000,
    wakeFd: -1,
    ...extra,
  });
  clients.push(client);
  return client;
}

describe("mcdist over loopback UDP", () => {
  beforeAll(async () => {
    imageFd = memfdCreate("mcdist-unit", MFD_CLOEXEC);
    pwrite(imageFd, image, 0);
    server = await startMcdistServer({ imageFd, size: image.byteLength, family, key, transport, mtu: 1500 });
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await server.close();
    close(imageFd);
  });

  test("fetch returns the asked pages; a sibling gets them as prefetch", () => {
    const extras = new Map<number, Uint8Array>();
    const sibling = open({ onExtraPage: (p, data) => extras.set(p, data.slice()) });
    const client = open();
    const asked = [5, 0, 255, 17];
    const got = client.fetch(asked);
    asked.forEach((p, i) => expect(got[i]).toEqual(page(p)));
    // The sibling's copies may still be on their way (a loaded machine): drain until they are in.
    for (const deadline = performance.now() + 2000; extras.size < asked.length && performance.now() < deadline; ) sibling.drain();
    expect([...extras.keys()].sort((a, b) => a - b)).toEqual([0, 5, 17, 255]);
    for (const [p, data] of extras) expect(data).toEqual(page(p));
    expect(sibling.stats().pagesReceivedUnasked).toBe(4);
    // The server thread counts a page after sending it, so its counters may trail what arrived.
    for (const deadline = performance.now() + 2000; server.stats().pagesSent < asked.length && performance.now() < deadline; )
      Bun.sleepSync(1);
    // One request, unless the machine was slow enough for the client to retry.
    expect(server.stats().requests).toBe(1 + client.stats().retries);
    expect(server.stats().pagesSent).toBe(client.stats().retries === 0 ? 4 : server.stats().pagesSent);
    expect(server.stats().pagesSent).toBeGreaterThanOrEqual(4);
  });

  test("pages asked ahead go in the same request and reach onExtraPage; the fetch waits for and returns its own", () => {
    const extras = new Map<number, Uint8Array>();
    const client = open({ onExtraPage: (p, data) => extras.set(p, data.slice()) });
    const before = server.stats().requests;
    const got = client.fetch([100], [101, 102, 103]);
    expect(got).toHaveLength(1);
    expect(got[0]).toEqual(page(100));
    for (const deadline = performance.now() + 2000; extras.size < 3 && performance.now() < deadline; ) client.drain();
    expect([...extras.keys()].sort((a, b) => a - b)).toEqual([101, 102, 103]);
    for (const [p, data] of extras) expect(data).toEqual(page(p));
    expect(server.stats().requests - before).toBe(1 + client.stats().retries);
    expect(() => client.fetch([7], [7])).toThrow(RangeError);
    expect(() =>
      client.fetch(
        [7],
        Array.from({ length: MAX_REQUEST_PAGES }, (_, i) => 8 + i),
      ),
    ).toThrow(RangeError);
  });

  test(
    "a client with a full batch of frames waiting drops siblings' pages unread until it catches up, and " + "still gets its own",
    async () => {
      const idle = open();
      const all = Array.from({ length: PAGES }, (_, p) => p);
      const fetchAll = (client: McdistClient) => {
        for (let i = 0; i < PAGES; i += 64) client.fetch(all.slice(i, i + 64));
      };
      // Two rounds of every page (3 frames each) wait at the idle client: more than one read takes.
      fetchAll(open());
      await Bun.sleep(300); // long enough that the server sends the pages again for a newcomer
      fetchAll(open());
      for (const deadline = performance.now() + 2000; server.stats().pagesSent < 2 * PAGES && performance.now() < deadline; )
        await Bun.sleep(5);
      expect(idle.fetch([7])[0]).toEqual(page(7));
      idle.drain();
      const dropped = idle.stats().framesDropped;
      console.log(`behind: ${JSON.stringify(idle.stats())}`);
      expect(dropped.behind).toBeGreaterThan(0);
      expect(dropped.forged ?? 0).toBe(0);
    },
  );

  test("a client that joins the group just after a page went to it gets the page sent again at its first ask", () => {
    const early = open();
    expect(early.fetch([40])[0]).toEqual(page(40));
    for (const deadline = performance.now() + 2000; server.stats().pagesSent === 0 && performance.now() < deadline; ) Bun.sleepSync(1);
    const before = server.stats();
    // A clone whose order came a moment later: it asks for what went out before it listened.
    const late = open();
    expect(late.fetch([40])[0]).toEqual(page(40));
    expect(late.stats().retries).toBe(0);
    for (const deadline = performance.now() + 2000; server.stats().pagesResent === before.pagesResent && performance.now() < deadline; )
      Bun.sleepSync(1);
    expect(server.stats().pagesResent - before.pagesResent).toBe(1);
  });

  test("a descriptor arrives in tagged chunks and must have the digest the clone order named", async () => {
    const descriptor = crypto.getRandomValues(new Uint8Array(100_000));
    const digest = new Bun.CryptoHasher("sha256").update(descriptor).digest("hex");
    const withDescriptor = await startMcdistServer({
      imageFd,
      size: image.byteLength,
      family: family + 1,
      key,
      transport: { ...transport, port: transport.port! + 1 },
      mtu: 1500,
      descriptor,
    });
    try {
      const options = { transport: { ...transport, port: transport.port! + 1 }, server: withDescriptor.endpoint, family: family + 1 };
      const client = open(options);
      expect(client.fetchDescriptor(descriptor.byteLength, digest)).toEqual(descriptor);
      // Every byte crossed once at least, in frames of at most the MTU.
      expect(withDescriptor.stats().framesSent).toBeGreaterThanOrEqual(Math.ceil(descriptor.byteLength / 1500));
      const other = open(options);
      expect(() => other.fetchDescriptor(descriptor.byteLength, "00".repeat(32))).toThrow(
        /the descriptor received by multicast has 100000 bytes and SHA-256 [0-9a-f]{16}…; the clone order named 100000 bytes and 0000000000000000…/,
      );
      expect(() => other.fetchDescriptor(65 * 32 * 1024, digest)).toThrow(RangeError);
    } finally {
      await withDescriptor.close();
    }
  });

  /** Tagged frames from a peer with the key, sent straight to the server; `until` waits for its counters. */
  function keyedPeer(target = server, targetFamily = family) {
    const socket = openUdpSocket();
    const to = parseUdpEndpoint(target.endpoint.address);
    const sender = newSender();
    let sequence = 1000;
    const frame = (type: FrameType, object: bigint, message: Uint8Array) => {
      const header = { type, family: targetFamily, sequence: ++sequence, object };
      return encodeFrame({ ...header, fragment: 0, fragments: 1, payload: sealControl(key, header, sender, message) });
    };
    return {
      frame,
      send: (bytes: Uint8Array) => sendUdp(socket, to.address, to.port, bytes),
      // As a sibling that has listened since the server's first send (group sequence numbers start at 1).
      request: (pages: number[]) =>
        sendUdp(socket, to.address, to.port, frame(FrameType.REQUEST, BigInt(pages[0]!), encodeRequest({ flags: 0, pages, heardFrom: 0 }))),
      rate: (pagesPerSecond: number) => sendUdp(socket, to.address, to.port, frame(FrameType.RATE, 0n, encodeRate(pagesPerSecond))),
      until: async (done: (s: McdistServerStats) => boolean) => {
        for (const deadline = performance.now() + 5000; !done(target.stats()) && performance.now() < deadline; ) await Bun.sleep(5);
        return target.stats();
      },
      close: () => close(socket),
    };
  }

  test(
    "a captured tagged request is heard once however often it is replayed; a tagged RATE=1 paces at the " + "floor, then expires",
    async () => {
      const peer = keyedPeer();
      try {
        const before = server.stats();
        const captured = peer.frame(FrameType.REQUEST, 200n, encodeRequest({ flags: 0, pages: [200, 201] }));
        for (let i = 0; i < 20; i++) peer.send(captured);
        const replayed = await peer.until((s) => s.requestsReplayed - before.requestsReplayed === 19);
        expect(replayed.requests - before.requests).toBe(1);
        expect(replayed.requestsReplayed - before.requestsReplayed).toBe(19);

        peer.rate(1);
        expect((await peer.until((s) => s.pacedRate !== 0)).pacedRate).toBe(MIN_PACED_RATE);
        await Bun.sleep(RATE_REPORT_TTL_MS + 100);
        peer.request([202]);
        const after = await peer.until((s) => s.requests - replayed.requests === 1 && s.pacedRate === 0);
        expect(after.pacedRate).toBe(0);
        expect(after.rateReports - before.rateReports).toBe(1);
      } finally {
        peer.close();
      }
    },
  );

  test("paced at its floor with pages queued for running siblings, a clone's descriptor goes before them", async () => {
    const descriptor = crypto.getRandomValues(new Uint8Array(3 * 32 * 1024));
    const digest = new Bun.CryptoHasher("sha256").update(descriptor).digest("hex");
    const port = transport.port! + 2;
    const withDescriptor = await startMcdistServer({
      imageFd,
      size: image.byteLength,
      family: family + 2,
      key,
      transport: { ...transport, port },
      mtu: 1500,
      descriptor,
    });
    const peer = keyedPeer(withDescriptor, family + 2);
    try {
      peer.rate(1);
      await peer.until((s) => s.pacedRate === MIN_PACED_RATE);
      let pagesBefore = 0;
      const late = open({
        transport: { ...transport, port },
        server: withDescriptor.endpoint,
        family: family + 2,
        onExtraPage: () => pagesBefore++,
      });
      // Two requests of siblings: half a second of pages at the floor, queued before the clone asks.
      peer.request(Array.from({ length: MAX_REQUEST_PAGES }, (_, i) => i));
      peer.request(Array.from({ length: MAX_REQUEST_PAGES }, (_, i) => MAX_REQUEST_PAGES + i));
      await peer.until((s) => s.requests === 2);
      expect(late.fetchDescriptor(descriptor.byteLength, digest)).toEqual(descriptor);
      // It came ahead of most of them (a queue in arrival order sent all 128 first).
      console.log(`descriptor behind ${pagesBefore} of ${2 * MAX_REQUEST_PAGES} queued pages`);
      expect(pagesBefore).toBeLessThan(MAX_REQUEST_PAGES);
    } finally {
      peer.close();
      await withDescriptor.close();
    }
  });

  test("paced at its floor with its queue full, the server still hears a sibling's request for pages already queued", async () => {
    const peer = keyedPeer();
    const pages = (from: number) => Array.from({ length: MAX_REQUEST_PAGES }, (_, i) => from + i);
    try {
      const before = server.stats();
      peer.rate(1);
      await peer.until((s) => s.pacedRate === MIN_PACED_RATE);
      // Two requests fill the paced queue (MAX_QUEUE_MS at the floor); sending them takes half a second.
      peer.request(pages(0));
      peer.request(pages(MAX_REQUEST_PAGES));
      for (let sibling = 0; sibling < 3; sibling++) peer.request(pages(0));
      const heard = await peer.until((s) => s.requests - before.requests === 5);
      expect(heard.requests - before.requests).toBe(5);
      expect(heard.droppedRequests - before.droppedRequests).toBe(0);
      expect(heard.requestsCollapsed - before.requestsCollapsed).toBe(3 * MAX_REQUEST_PAGES);
      // A request for pages not queued yet finds the queue full, and is refused.
      peer.request(pages(2 * MAX_REQUEST_PAGES));
      expect((await peer.until((s) => s.droppedRequests > before.droppedRequests)).droppedRequests - before.droppedRequests).toBe(1);
    } finally {
      peer.close();
      await Bun.sleep(RATE_REPORT_TTL_MS + 100); // the pace expires before the next test
    }
  });

  test(
    "at an MTU that fits two pages the server sends pages queued one after another in one PAGES frame; a page whose tag " +
      "fails in one is refused, its neighbour kept",
    async () => {
      const wideFamily = family + 1;
      const wideTransport: TransportSpec = { ...transport, port: (transport as { port: number }).port + 1 };
      const wide = await startMcdistServer({
        imageFd,
        size: image.byteLength,
        family: wideFamily,
        key,
        transport: wideTransport,
        mtu: 9000,
      });
      const peer = openTransport(wideTransport, { family: wideFamily, mtu: 9000 });
      try {
        const extras = new Map<number, Uint8Array>();
        const client = open({
          transport: wideTransport,
          server: wide.endpoint,
          family: wideFamily,
          mtu: 9000,
          onExtraPage: (p, data) => extras.set(p, data.slice()),
        });
        const asked = [100, 101, 102, 103, 104, 110];
        const got = client.fetch(asked);
        asked.forEach((p, i) => expect(got[i]).toEqual(page(p)));
        for (const deadline = performance.now() + 2000; wide.stats().pagesSent < asked.length && performance.now() < deadline; )
          Bun.sleepSync(1);
        // 100+101, 102+103, 104, 110: four frames for six pages (unless a slow machine made the client ask again).
        if (client.stats().retries === 0) expect(wide.stats()).toMatchObject({ pagesSent: 6, framesSent: 4 });

        const good = encodePageObject(key, wideFamily, 120, page(120));
        const bad = encodePageObject(key, wideFamily, 121, page(121));
        bad[0]! ^= 1; // the contents changed, the tag did not
        const pagesFrame = (object: bigint, payload: Uint8Array) =>
          encodeFrame({ type: FrameType.PAGES, family: wideFamily, sequence: 9000, object, fragment: 0, fragments: 1, payload });
        const both = new Uint8Array(2 * PAGE_OBJECT_SIZE);
        both.set(good);
        both.set(bad, PAGE_OBJECT_SIZE);
        peer.send("group", pagesFrame(120n, both));
        peer.send("group", pagesFrame(130n, good.subarray(0, 3000))); // not whole pages
        peer.send("group", pagesFrame(BigInt(PAGES - 1), both)); // runs past the image
        for (const deadline = performance.now() + 2000; (client.stats().framesDropped.malformed ?? 0) < 2 && performance.now() < deadline; )
          client.drain();
        expect(extras.get(120)).toEqual(page(120));
        expect(extras.has(121)).toBe(false);
        expect(client.stats().framesDropped).toMatchObject({ forged: 1, malformed: 2 });
      } finally {
        peer.close();
        await wide.close();
      }
    },
  );

  test("bad page lists are refused before anything is sent", () => {
    const client = open();
    expect(() => client.fetch([])).toThrow(RangeError);
    expect(() => client.fetch([PAGES])).toThrow(/outside/);
    expect(() => client.fetch([1, 1])).toThrow(/twice/);
    expect(() => client.fetch(Array.from({ length: 65 }, (_, i) => i))).toThrow(RangeError);
  });

  test("a readable wake fd ends a wait with Woken", () => {
    const wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    try {
      const client = open({ wakeFd: wake, server: { kind: "udp", address: "127.0.0.1:9" } });
      write(wake, new Uint8Array(new BigUint64Array([1n]).buffer));
      expect(() => client.fetch([1])).toThrow(Woken);
    } finally {
      close(wake);
    }
  });

  test("a measuring client alone leaves the server unpaced; once a sibling's pages reach it, it reports its capacity", async () => {
    // A server of its own: no other test's clients or reports.
    const pageCount = 4 * MIN_MEASURED_PAGES;
    const ownImage = memfdCreate("mcdist-unit-rate", MFD_CLOEXEC);
    pwrite(
      ownImage,
      Uint8Array.from({ length: pageCount * 4096 }, (_, i) => (i * 13 + (i >> 12)) & 0xff),
      0,
    );
    const port = transport.port! + 3;
    const own = await startMcdistServer({
      imageFd: ownImage,
      size: pageCount * 4096,
      family: family + 3,
      key,
      transport: { ...transport, port },
      mtu: 1500,
    });
    try {
      const options = { transport: { ...transport, port }, server: own.endpoint, family: family + 3, pageCount };
      const pages = (from: number, count: number) => Array.from({ length: count }, (_, i) => from + i);
      const lone = open({ ...options, ratePagesPerSecond: "measured" });
      // Twice the pages a capacity is measured over, all its own: each request could carry a report.
      for (let first = 0; first < 2 * MIN_MEASURED_PAGES; first += MAX_REQUEST_PAGES) lone.fetch(pages(first, MAX_REQUEST_PAGES));
      // A report goes out before the request it rides with, so the server has heard any by now.
      expect(own.stats()).toMatchObject({ rateReports: 0, pacedRate: 0 });

      // A sibling's pages reach it too: its next request carries its capacity, and the server paces.
      const sibling = open(options);
      sibling.fetch(pages(2 * MIN_MEASURED_PAGES, MAX_REQUEST_PAGES));
      expect(lone.fetch([3 * MIN_MEASURED_PAGES])[0]).toHaveLength(4096);
      expect(lone.stats().pagesReceivedUnasked).toBe(MAX_REQUEST_PAGES);
      expect(own.stats().rateReports).toBe(1);
      expect(own.stats().pacedRate).toBeGreaterThanOrEqual(MIN_PACED_RATE);
    } finally {
      await own.close();
      close(ownImage);
    }
  });

  test("a server that never answers is a MEMORY error within the timeout", () => {
    const client = open({ timeoutMs: 600, server: { kind: "udp", address: "127.0.0.1:9" } });
    const started = performance.now();
    let error: unknown;
    try {
      client.fetch([3, 4]);
    } catch (e) {
      error = e;
    }
    const elapsed = performance.now() - started;
    expect(error).toMatchObject({
      code: "MEMORY",
      message: expect.stringMatching(
        /^the mcdist server at 127\.0\.0\.1:9 did not answer page 3 within 600 ms \(\d+ retries; 0 frames received, dropped: \{\}\)$/,
      ),
    });
    expect(elapsed).toBeGreaterThanOrEqual(600);
    expect(elapsed).toBeLessThan(900);
    expect(client.stats().unicastFallbacks).toBe(1);
  });
});
