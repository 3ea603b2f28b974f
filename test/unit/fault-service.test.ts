/**
 * FaultService's prefetch over a page source that streams (mcdist's fetchAhead) and one that does
 * not: a sequential reader's faults; and a preload over a source that keeps several requests in
 * flight (a memory server's connection). Served with stand-ins for the sink and the source (the
 * real ones are userfaultfd and sockets: memtap.test.ts, page-client.test.ts and cluster.test.ts).
 */
import { describe, expect, test } from "bun:test";
import { faultCounters, Slot } from "../../src/memory/fault-counters.ts";
import { FaultService, type PageSink } from "../../src/memory/fault-service.ts";
import { MAX_PAGES_PER_REQUEST } from "../../src/memory/page-protocol.ts";
import type { PageSource } from "../../src/memory/page-source.ts";

const PAGE_COUNT = 2048;
const contents = (page: number) => new Uint8Array(4096).fill(page & 0xff);

class RecordingSink implements PageSink {
  readonly installed = new Set<number>();
  install(page: number, data: Uint8Array): boolean {
    expect(data[0]).toBe(page & 0xff);
    if (this.installed.has(page)) return false;
    this.installed.add(page);
    return true;
  }
  zero(page: number): boolean {
    return this.install(page, new Uint8Array(4096).fill(page & 0xff));
  }
  release(): void {}
}

interface Request {
  pages: number[];
  ahead: number[];
}

/** Answers at once; with `streams`, pages asked ahead wait in `inFlight` until the test delivers them. */
function source(streams: boolean): PageSource & { requests: Request[]; inFlight: number[] } {
  const requests: Request[] = [];
  const inFlight: number[] = [];
  const base = {
    fd: -1,
    requests,
    inFlight,
    fetch(pages: number[]) {
      requests.push({ pages, ahead: [] });
      return pages.map(contents);
    },
    idle() {},
    close() {},
  };
  if (!streams) return base;
  return {
    ...base,
    fetchAhead(pages: number[], ahead: number[]) {
      requests.push({ pages, ahead });
      inFlight.push(...ahead);
      return pages.map(contents);
    },
  };
}

function serviceOver(pageSource: PageSource) {
  const counters = faultCounters();
  const sink = new RecordingSink();
  const service = new FaultService(
    {
      pageCount: PAGE_COUNT,
      nonZeroPages: new Uint8Array(PAGE_COUNT / 8).fill(0xff),
      freePages: new Uint8Array(PAGE_COUNT / 8),
      prefetch: true,
      allocationHints: undefined,
      counters,
    },
    sink,
  );
  service.attach(pageSource);
  return { service, sink, counters };
}

/** A reader of pages 0..end-1 in order: a page not in place faults. */
function readInOrder(service: FaultService, sink: RecordingSink, end: number, beforeEach: (page: number) => void = () => {}): void {
  for (let page = 0; page < end; page++) {
    beforeEach(page);
    if (!sink.installed.has(page)) service.serve(new Map([[page, false]]), performance.now());
  }
}

describe("fault service prefetch", () => {
  test("over a streaming source a fault waits for its own page only; the window grows to a whole request and goes on over pages on their way", () => {
    const pages = source(true);
    const { service, sink, counters } = serviceOver(pages);
    // The first page of each window is late: the reader runs into it while it is on its way.
    readInOrder(service, sink, 1024, (page) => {
      const last = pages.requests.at(-1);
      if (last?.ahead[0] === page && pages.inFlight.includes(page)) return;
      for (const arrived of pages.inFlight.splice(0)) service.installArrived(arrived, contents(arrived));
    });
    for (const request of pages.requests) expect(request.pages.length + request.ahead.length).toBeLessThanOrEqual(MAX_PAGES_PER_REQUEST);
    // Each fault's request waits for the faulting page alone.
    expect(pages.requests.every((r) => r.pages.length === 1)).toBe(true);
    expect(Math.max(...pages.requests.map((r) => r.ahead.length))).toBe(MAX_PAGES_PER_REQUEST - 1);
    // A fault on a page on its way asks for it alone, and the window it came from goes on.
    const intoFlight = pages.requests.filter((r, i) => i > 0 && r.ahead.length === 0);
    expect(intoFlight.length).toBeGreaterThan(0);
    const widths = pages.requests.map((r) => r.ahead.length).filter((n) => n > 0);
    const once = widths.slice(widths.indexOf(MAX_PAGES_PER_REQUEST - 1));
    expect(once).toEqual(once.map(() => MAX_PAGES_PER_REQUEST - 1));
    for (const page of pages.inFlight.splice(0)) service.installArrived(page, contents(page));
    // Pages asked ahead count as fetched when they arrive, not as a sibling's multicast.
    expect(counters[Slot.PAGES_MULTICAST]).toBe(0);
    expect(counters[Slot.PAGES_FETCHED]).toBe(sink.installed.size);
    expect(sink.installed.size).toBeGreaterThanOrEqual(1024);
    // A page nobody here asked for is a sibling's.
    service.installArrived(PAGE_COUNT - 1, contents(PAGE_COUNT - 1));
    expect(counters[Slot.PAGES_MULTICAST]).toBe(1);
  });

  test("over a source that answers whole, a fault waits for its window, at most 32 pages after it", () => {
    const pages = source(false);
    const { service, sink, counters } = serviceOver(pages);
    readInOrder(service, sink, 2000);
    expect(Math.max(...pages.requests.map((r) => r.pages.length))).toBe(33);
    expect(pages.requests.every((r) => r.ahead.length === 0)).toBe(true);
    expect(counters[Slot.PAGES_FETCHED]).toBe(sink.installed.size);
    // Fewer faults over the streaming source: a window of a whole request.
    const streaming = source(true);
    const other = serviceOver(streaming);
    readInOrder(other.service, other.sink, 2000, () => {
      for (const page of streaming.inFlight.splice(0)) other.service.installArrived(page, contents(page));
    });
    expect(streaming.requests.length).toBeLessThan(pages.requests.length * 0.6);
  });

  test("a preload over a source that keeps requests in flight goes through it in requests of at most a request's worth", () => {
    const pages = source(false);
    const batches: number[][] = [];
    const pipelined: PageSource = {
      ...pages,
      fetchEach(requests, each) {
        for (const request of requests) {
          batches.push(request);
          each(request, request.map(contents));
        }
      },
    };
    const { service, sink, counters } = serviceOver(pipelined);
    const wanted = Array.from({ length: 300 }, (_, i) => (i * 5) % PAGE_COUNT);
    service.preload(wanted);
    expect(pages.requests).toEqual([]);
    expect(batches.flat()).toEqual(wanted);
    expect(batches.every((request) => request.length <= MAX_PAGES_PER_REQUEST)).toBe(true);
    expect([...sink.installed].sort((a, b) => a - b)).toEqual([...wanted].sort((a, b) => a - b));
    expect(counters[Slot.REQUESTS]).toBe(batches.length);
  });
});
