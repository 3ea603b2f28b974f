/**
 * Memory on demand, for real: a clone restored over empty memory gets every page it touches from
 * the parent's memory server (or zero-fills it, per the descriptor's bitmap) through userfaultfd,
 * and runs to the host's answer. A server that dies, goes silent or sends a corrupted page ends
 * the clone with a clear error in bounded time, and the bad page never reaches guest memory.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { MachineEnd } from "../../src/backend/backend.ts";
import { KvmMachine } from "../../src/backend/kvm/machine.ts";
import { describeMachine } from "../../src/clone/describe.ts";
import type { Descriptor } from "../../src/descriptor/format.ts";
import { guestImage } from "../../src/guest/image.ts";
import { GuestMemory } from "../../src/guest-memory/guest-memory.ts";
import { PAGE_SIZE } from "../../src/guest-memory/layout.ts";
import { startMemoryServer } from "../../src/memory/memory-server.ts";
import { type Memtap, startMemtap } from "../../src/memory/memtap.ts";
import { FENCE_AFTER_MS } from "../../src/memory/memtap-protocol.ts";
import type { FaultStats } from "../../src/memory/fault-counters.ts";
import {
  decodeError,
  decodeHeader,
  decodeHelloReply,
  decodePageRequest,
  encodeHello,
  encodeHelloReply,
  encodeMessage,
  encodePageData,
  encodePageRequest,
  ErrorKind,
  HEADER_SIZE,
  MessageType,
  PROTOCOL_VERSION,
} from "../../src/memory/page-protocol.ts";
import { SnowflockError } from "../../src/errors.ts";
import { close } from "../../src/sys/files.ts";
import { O_CLOEXEC } from "../../src/sys/constants.ts";
import { userfaultfd } from "../../src/sys/uffd.ts";
import { within } from "../support/time.ts";
import { dataset, sha256Hex } from "../../src/guest/dataset.ts";
import { describeKvm, KVM_REQUIRED } from "../support/kvm.ts";

const MEMORY = 256 * 1024 * 1024;
const DATASET = 64 * 1024 * 1024;
const CMDLINE = `sha256 size=${DATASET} seed=3 smp=2`;
const EXPECTED = `sha256 ${sha256Hex(dataset(3n, DATASET))}`;
/** Bound on how long a clone may take to end once its memory server failed. */
const END_BOUND_MS = 8000;

const dir = mkdtempSync(join(tmpdir(), "snowflock-memtap-"));
let sockets = 0;
const socketPath = () => join(dir, `s${sockets++}.sock`);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function report(what: string, stats: FaultStats, ms: number): void {
  console.log(
    `${what}: ${stats.faults} faults (${stats.pagesFetched} fetched in ${stats.requests} requests, ` +
      `${stats.pagesZeroFilled} zero-filled, ${stats.eagerPages} eager) in ${ms.toFixed(0)} ms; ` +
      `service mean ${stats.meanServiceMicros.toFixed(1)} µs/fault, wall ${((ms * 1000) / Math.max(stats.faults, 1)).toFixed(1)} µs/fault`,
  );
}

// ---- a parent paused right after it generated its dataset: a clone then needs all of it ----

interface Snapshot {
  parent: KvmMachine;
  parentLines: string[];
  descriptor: Descriptor;
  /** The frozen image's fd (ours to close) and its path. */
  imageFd: number;
  imagePath: string;
  /** The frozen image, mapped for the hostile servers below. */
  image: GuestMemory;
}

async function snapshotParent(): Promise<Snapshot> {
  const parentLines: string[] = [];
  const parent = KvmMachine.boot(guestImage(), MEMORY, CMDLINE, { vcpus: 2, onConsole: (l) => parentLines.push(l) });
  await parent.start();
  // Under emulation two vCPUs take tens of seconds to write the dataset.
  const deadline = Date.now() + within(20_000);
  for (;;) {
    await Bun.sleep(10);
    parent.pause(); // throws if the parent already finished: the loop below resumes it quickly enough
    using nonZero = parent.memory.nonZeroPages();
    if (nonZero.popcount() >= DATASET / PAGE_SIZE) break;
    if (Date.now() > deadline) throw new Error("the parent never generated its dataset");
    parent.resume();
  }
  expect(parentLines.filter((l) => l.startsWith("sha256 "))).toEqual([]); // captured mid-run
  const { descriptor } = describeMachine(parent, { name: "parent", cmdline: CMDLINE });
  const imageFd = parent.memory.freeze();
  const imagePath = `/proc/self/fd/${imageFd}`;
  return { parent, parentLines, descriptor, imageFd, imagePath, image: GuestMemory.openImage(imagePath, parent.memory.layout) };
}

interface Clone {
  machine: KvmMachine;
  memtap: Memtap;
  memory: GuestMemory;
  lines: string[];
  started: number;
}

async function startClone(s: Snapshot, serverSocket: string, timeoutMs?: number): Promise<Clone> {
  const memory = GuestMemory.createEmpty(s.image.layout);
  const memtap = await startMemtap({
    memory,
    server: { kind: "unix", path: serverSocket },
    nonZeroPages: s.descriptor.nonZeroPages,
    eagerPages: s.descriptor.pages,
    timeoutMs,
  });
  const lines: string[] = [];
  const machine = KvmMachine.restore(s.descriptor.state, memory, { cloneId: 1, onConsole: (l) => lines.push(l) });
  const started = performance.now();
  await machine.start();
  return { machine, memtap, memory, lines, started };
}

/** How the owner ends a clone whose memtap failed: vCPUs told to stop first, then memtap released. */
async function endAfterFailure(clone: Clone): Promise<{ error: Error; end: MachineEnd; msAfterFailure: number }> {
  const error = await clone.memtap.failed;
  const failedAt = performance.now();
  const ended = clone.machine.stop();
  await clone.memtap.stop();
  const end = await Promise.race([ended, Bun.sleep(END_BOUND_MS).then(() => undefined)]);
  if (!end) throw new Error(`the clone did not end within ${END_BOUND_MS} ms of its memtap failing (${error.message})`);
  return { error, end, msAfterFailure: performance.now() - failedAt };
}

async function waitUntil(predicate: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error("condition not reached in time");
    await Bun.sleep(1);
  }
}

// ---- a memory server that misbehaves on purpose, written with the protocol's own encoders ----

type Misbehaviour = "corrupt" | "silent";

function hostileServer(image: GuestMemory, path: string, misbehaviour: Misbehaviour, afterRequests: number) {
  const pageCount = image.size / PAGE_SIZE;
  const state = { requests: 0, pagesServed: 0, corruptedPage: -1 };
  const listener = Bun.listen<{ inbound: Uint8Array }>({
    unix: path,
    socket: {
      open(socket) {
        socket.data = { inbound: new Uint8Array(0) };
      },
      data(socket, chunk) {
        const buffer = new Uint8Array(socket.data.inbound.byteLength + chunk.byteLength);
        buffer.set(socket.data.inbound);
        buffer.set(chunk, socket.data.inbound.byteLength);
        let at = 0;
        while (buffer.byteLength - at >= HEADER_SIZE) {
          const header = decodeHeader(buffer.subarray(at));
          if (buffer.byteLength - at < HEADER_SIZE + header.length) break;
          const payload = buffer.subarray(at + HEADER_SIZE, at + HEADER_SIZE + header.length);
          at += HEADER_SIZE + header.length;
          if (header.type === MessageType.Hello) {
            socket.write(
              encodeMessage(
                MessageType.HelloReply,
                header.sequence,
                encodeHelloReply({ version: PROTOCOL_VERSION, pageSize: PAGE_SIZE, pageCount }),
              ),
            );
            continue;
          }
          const pages = decodePageRequest(payload);
          if (++state.requests <= afterRequests) {
            state.pagesServed += pages.length;
            socket.write(
              encodeMessage(
                MessageType.PageData,
                header.sequence,
                encodePageData(pages, (p) => image.bytes.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE)),
              ),
            );
          } else if (misbehaviour === "corrupt") {
            const message = encodeMessage(
              MessageType.PageData,
              header.sequence,
              encodePageData(pages, (p) => image.bytes.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE)),
            );
            message[HEADER_SIZE + 8 + 100]! ^= 0x01; // one bit of the first page, after the checksum was taken
            state.corruptedPage = pages[0]!;
            socket.write(message);
          } // "silent": swallow the request
        }
        socket.data.inbound = buffer.slice(at);
      },
    },
  });
  return { state, close: () => listener.stop(true) };
}

describeKvm("memtap: a clone over empty memory, served by the parent's memory server", () => {
  let s: Snapshot;
  beforeAll(async () => {
    s = await snapshotParent();
  });
  afterAll(async () => {
    // The parent, frozen under every clone above, finishes its own run unchanged.
    s.parent.resume();
    expect(await s.parent.ended).toEqual({ kind: "exit", status: 0 });
    expect(s.parentLines.filter((l) => l.startsWith("sha256 "))).toEqual([EXPECTED]);
    s.image.close();
    close(s.imageFd);
  });

  test(
    "runs to the host's digest with 2 vCPUs faulting, fetching only the non-zero pages it touches",
    async () => {
      const server = await startMemoryServer({ imagePath: s.imagePath, layout: s.image.layout, socketPath: socketPath() });
      try {
        const clone = await startClone(s, server.socketPath!);
        let failure: Error | undefined;
        void clone.memtap.failed.then((e) => (failure = e));
        const end = await clone.machine.ended;
        const ms = performance.now() - clone.started;
        await clone.memtap.stop();
        expect(failure).toBeUndefined();
        expect(end).toEqual({ kind: "exit", status: 0 });
        expect(clone.lines).toEqual([EXPECTED]);

        const stats = clone.memtap.stats();
        report("clone run", stats, ms);
        const pageCount = MEMORY / PAGE_SIZE;
        expect(stats.pagesFetched).toBeGreaterThan(DATASET / PAGE_SIZE / 2);
        expect(stats.pagesFetched).toBeLessThan(pageCount / 3);
        expect(stats.faults).toBe(stats.pagesFetched + stats.pagesZeroFilled);
        expect(stats.eagerPages).toBe(s.descriptor.pages.size);
        expect(server.stats().pagesServed).toBe(stats.pagesFetched);
        expect(stats.faultServiceHistogram.reduce((n, b) => n + b.count, 0)).toBe(stats.faults);
      } finally {
        server.close();
      }
    },
    within(60_000),
  );

  test(
    "a memory server that dies mid-run ends the clone with an error naming it, in bounded time",
    async () => {
      const server = await startMemoryServer({ imagePath: s.imagePath, layout: s.image.layout, socketPath: socketPath() });
      const clone = await startClone(s, server.socketPath!);
      await waitUntil(() => clone.memtap.stats().pagesFetched >= 200);
      const killedAt = performance.now();
      server.close();
      const { error, end, msAfterFailure } = await endAfterFailure(clone);
      const ms = performance.now() - killedAt;
      console.log(
        `server killed: clone ended ${ms.toFixed(0)} ms later (${msAfterFailure.toFixed(0)} ms after memtap reported): ${error.message}`,
      );
      expect(error.message).toContain(`memory server at ${server.socketPath}`);
      expect(error.message).toContain("closed the connection");
      expect(end).toEqual({ kind: "stopped" });
      expect(clone.lines).toEqual([]); // no digest from a guest that lost its pages
      expect(ms).toBeLessThan(END_BOUND_MS);
    },
    within(60_000),
  );

  test(
    "an owner that ignores the failure does not leave the clone hanging: memtap fences its memory",
    async () => {
      const server = await startMemoryServer({ imagePath: s.imagePath, layout: s.image.layout, socketPath: socketPath() });
      const clone = await startClone(s, server.socketPath!);
      await waitUntil(() => clone.memtap.stats().pagesFetched >= 200);
      server.close();
      const error = await clone.memtap.failed;
      const failedAt = performance.now();
      // Nobody stops the VM. After FENCE_AFTER_MS guest memory becomes inaccessible and the uffd
      // closes: the waiting vCPUs fail their access (the guest cannot go on, on zeros or otherwise).
      const end = await Promise.race([clone.machine.ended, Bun.sleep(FENCE_AFTER_MS + END_BOUND_MS).then(() => undefined)]);
      await clone.memtap.stop();
      expect(error.message).toContain("closed the connection");
      expect(end?.kind).toBe("crash");
      expect(performance.now() - failedAt).toBeGreaterThanOrEqual(FENCE_AFTER_MS - 50);
      expect(clone.lines).toEqual([]);
    },
    within(60_000),
  );

  test(
    "a corrupted page fails the clone and never reaches guest memory",
    async () => {
      const path = socketPath();
      const hostile = hostileServer(s.image, path, "corrupt", 100);
      try {
        const clone = await startClone(s, path);
        const error = await clone.memtap.failed;
        // Before anything releases the waiting fault: the bad page is not in the clone's memory.
        expect(hostile.state.corruptedPage).toBeGreaterThanOrEqual(0);
        using resident = clone.memory.touchedPages();
        expect(resident.test(hostile.state.corruptedPage)).toBe(false);
        // A request may carry several pages (two vCPUs faulting at once): count what was served.
        expect(hostile.state.pagesServed).toBeGreaterThanOrEqual(100);
        expect(clone.memtap.stats().pagesFetched).toBe(hostile.state.pagesServed);
        const { end } = await endAfterFailure(clone);
        expect(error.message).toContain(`memory server at ${path} sent a bad message: checksum mismatch`);
        expect(end).toEqual({ kind: "stopped" });
        expect(clone.lines).toEqual([]);
      } finally {
        hostile.close();
      }
    },
    within(60_000),
  );

  test(
    "a memory server that stops answering fails the clone after the timeout",
    async () => {
      const path = socketPath();
      const hostile = hostileServer(s.image, path, "silent", 50);
      try {
        const clone = await startClone(s, path, 1000);
        const started = performance.now();
        const { error, end } = await endAfterFailure(clone);
        expect(error.message).toBe(`the memory server at ${path} did not answer within 1000 ms`);
        expect(performance.now() - started).toBeLessThan(1000 + END_BOUND_MS);
        expect(end).toEqual({ kind: "stopped" });
        expect(clone.lines).toEqual([]);
      } finally {
        hostile.close();
      }
    },
    within(60_000),
  );

  test("a clone whose memory server is not there fails to start with a clear error", async () => {
    const path = socketPath();
    const memory = GuestMemory.createEmpty(s.image.layout);
    try {
      await expect(
        startMemtap({ memory, server: { kind: "unix", path }, nonZeroPages: s.descriptor.nonZeroPages, eagerPages: s.descriptor.pages }),
      ).rejects.toThrow(`cannot reach the memory server at ${path}`);
    } finally {
      memory.close();
    }
  });
});

// ---- without a VM: several threads faulting on the same pages, two memtaps on one server ----

function uffdUnavailable(): string | undefined {
  try {
    close(userfaultfd(O_CLOEXEC));
    return undefined;
  } catch (error) {
    return (error as Error).message;
  }
}
const noUffd = uffdUnavailable();
if (noUffd && KVM_REQUIRED)
  test("userfaultfd is available (SNOWFLOCK_REQUIRE_KVM=1)", () => {
    throw new Error(noUffd);
  });

/** A Worker that reads pages of a memtap'd memory (each read may fault) and hashes each page. */
const TOUCHER = `
import { GuestMemory } from ${JSON.stringify(new URL("../../src/guest-memory/guest-memory.ts", import.meta.url).pathname)};
self.onmessage = ({ data }) => {
  const memory = GuestMemory.attach(data.layout, data.address);
  const words = new Int32Array(memory.bytes.buffer, memory.bytes.byteOffset, memory.size / 4);
  for (const [page, value] of data.writes) words[page * 1024 + 5] = value;
  const hashes = new Int32Array(data.pages.length);
  data.pages.forEach((page, i) => { hashes[i] = hashPage(words, page); });
  self.postMessage(hashes);
};
${hashPage.toString()}
`;

function hashPage(words: Int32Array, page: number): number {
  let h = 0;
  for (let w = page * 1024, end = w + 1024; w < end; w++) h = (Math.imul(h, 31) + words[w]!) | 0;
  return h;
}

describe.skipIf(noUffd !== undefined)("memtap: concurrent faults from several threads", () => {
  test(
    "four threads on two memtaps of one server read every page right, the same pages at once",
    async () => {
      const source = GuestMemory.create(16 * 1024 * 1024);
      const pageCount = source.size / PAGE_SIZE;
      const sourceWords = new Int32Array(source.bytes.buffer, source.bytes.byteOffset, source.size / 4);
      for (let page = 0; page < pageCount; page++) {
        if (page % 4 === 0) continue; // every fourth page stays zero
        for (let w = 0; w < 1024; w++) sourceWords[page * 1024 + w] = Math.imul(page + 1, 0x9e3779b1) ^ w;
      }
      using nonZero = source.nonZeroPages();
      const nonZeroPages = nonZero.toBytes();
      const imageFd = source.freeze();
      const server = await startMemoryServer({ imageFd, layout: source.layout, socketPath: socketPath() });
      const toucher = URL.createObjectURL(new Blob([TOUCHER], { type: "application/typescript" }));
      const writePages = (k: number) => [pageCount - 4 * (k + 1)]; // zero pages nobody else reads
      const readPages = Array.from({ length: pageCount - 16 }, (_, p) => p);
      const expected = readPages.map((p) => hashPage(sourceWords, p));
      const memories: GuestMemory[] = [];
      const memtaps: Memtap[] = [];
      try {
        for (let m = 0; m < 2; m++) {
          const memory = GuestMemory.createEmpty(source.layout);
          memories.push(memory);
          memtaps.push(
            await startMemtap({
              memory,
              server: { kind: "unix", path: server.socketPath! },
              nonZeroPages,
              eagerPages: new Map([[1, source.bytes.slice(PAGE_SIZE, 2 * PAGE_SIZE)]]),
            }),
          );
        }
        const started = performance.now();
        const results = await Promise.all(
          [0, 1, 2, 3].map(
            (k) =>
              new Promise<Int32Array>((resolve, reject) => {
                const worker = new Worker(toucher);
                worker.onmessage = (e: MessageEvent<Int32Array>) => {
                  worker.terminate();
                  resolve(e.data);
                };
                worker.onerror = (e) => reject(new Error(e.message));
                const memory = memories[k % 2]!;
                // Threads 0 and 1 share memtap 0, 2 and 3 memtap 1; in each pair one reads forwards, one backwards.
                const pages = k < 2 ? readPages : readPages.toReversed();
                worker.postMessage({
                  layout: memory.layout,
                  address: memory.address,
                  pages: k % 2 === 0 ? pages : pages.toReversed(),
                  writes: writePages(k).map((p) => [p, 1000 + k]),
                });
              }),
          ),
        );
        const ms = performance.now() - started;
        const stopped = memtaps.splice(0);
        for (const memtap of stopped) await memtap.stop(); // the counters are final once stopped
        results.forEach((hashes, k) => {
          const order = k < 2 === (k % 2 === 0) ? readPages : readPages.toReversed();
          const want = k < 2 === (k % 2 === 0) ? expected : expected.toReversed();
          expect(hashes.length).toBe(order.length);
          expect([...hashes]).toEqual(want);
        });
        stopped.forEach((memtap, m) => {
          const stats = memtap.stats();
          report(`threads on memtap ${m}`, stats, ms);
          expect(stats.faults).toBe(stats.pagesFetched + stats.pagesZeroFilled);
          expect(stats.pagesFetched).toBeGreaterThanOrEqual(nonZero.popcount() - 1 - 12); // all read non-zero pages but the eager one
          expect(stats.pagesZeroFilled).toBeGreaterThanOrEqual(readPages.length / 4);
        });
        expect(server.stats().clients).toBe(2);
      } finally {
        for (const memtap of memtaps) await memtap.stop();
        for (const memory of memories) memory.close();
        server.close();
        close(imageFd);
        source.close();
        URL.revokeObjectURL(toucher);
      }
    },
    within(60_000),
  );
});

describe.skipIf(noUffd !== undefined)("memtap: a run of zero pages over a page already in place", () => {
  test(
    "a fault whose zero run reaches an eager page or a page zero-filled alone before fills the run page by page (the kernel fills it in part: EAGAIN)",
    async () => {
      // Pages 0-5 and 7-15 are zero, 6 and 16 on are not; page 3 (zero) is shipped eagerly.
      const source = GuestMemory.create(1024 * 1024);
      const pageCount = source.size / PAGE_SIZE;
      const sourceWords = new Int32Array(source.bytes.buffer, source.bytes.byteOffset, source.size / 4);
      for (let page = 0; page < pageCount; page++) {
        if (page !== 6 && page < 16) continue;
        for (let w = 0; w < 1024; w++) sourceWords[page * 1024 + w] = Math.imul(page + 1, 0x9e3779b1) ^ w;
      }
      using nonZero = source.nonZeroPages();
      const imageFd = source.freeze();
      const server = await startMemoryServer({ imageFd, layout: source.layout, socketPath: socketPath() });
      const toucher = URL.createObjectURL(new Blob([TOUCHER], { type: "application/typescript" }));
      const memory = GuestMemory.createEmpty(source.layout);
      let memtap: Memtap | undefined;
      try {
        memtap = await startMemtap({
          memory,
          server: { kind: "unix", path: server.socketPath! },
          nonZeroPages: nonZero.toBytes(),
          prefetch: true, // which zero-fills a run of zero pages at once
          eagerPages: new Map([[3, source.bytes.slice(3 * PAGE_SIZE, 4 * PAGE_SIZE)]]),
        });
        // Page 5 first: its run is itself alone (page 6 is fetched). Then page 0: its run 0-5 holds
        // page 3 (eager) and page 5 (filled before).
        const pages = [5, 0, ...Array.from({ length: 32 }, (_, p) => p)];
        const worker = new Worker(toucher);
        const hashes = await Promise.race([
          new Promise<Int32Array>((resolve, reject) => {
            worker.onmessage = (e: MessageEvent<Int32Array>) => resolve(e.data);
            worker.onerror = (e) => reject(new Error(e.message));
            worker.postMessage({ layout: memory.layout, address: memory.address, pages, writes: [] });
          }),
          memtap.failed.then((error) => {
            throw error;
          }),
        ]).finally(async () => {
          await memtap?.stop(); // lets a fault left pending go (the kernel zero-fills it) before the Worker ends
          worker.terminate();
        });
        expect([...hashes]).toEqual(pages.map((p) => hashPage(sourceWords, p)));
      } finally {
        await memtap?.stop();
        memory.close();
        server.close();
        close(imageFd);
        source.close();
        URL.revokeObjectURL(toucher);
      }
    },
    within(30_000),
  );
});

// ---- the memory server's side of the protocol, with a raw client ----

async function rawClient(path: string) {
  let received = new Uint8Array(0);
  let closed = false;
  const socket: Socket = await Bun.connect({
    unix: path,
    socket: {
      data(_, chunk) {
        const next = new Uint8Array(received.byteLength + chunk.byteLength);
        next.set(received);
        next.set(chunk, received.byteLength);
        received = next;
      },
      close() {
        closed = true;
      },
    },
  });
  return {
    send: (message: Uint8Array) => socket.write(message),
    isClosed: () => closed,
    async next(): Promise<{ type: MessageType; sequence: number; payload: Uint8Array }> {
      await waitUntil(() => received.byteLength >= HEADER_SIZE && received.byteLength >= HEADER_SIZE + decodeHeader(received).length, 5000);
      const header = decodeHeader(received);
      const payload = received.slice(HEADER_SIZE, HEADER_SIZE + header.length);
      received = received.slice(HEADER_SIZE + header.length);
      return { type: header.type, sequence: header.sequence, payload };
    },
    end: () => socket.end(),
  };
}

describe("memory server", () => {
  test("answers Hello with its image, refuses pages beyond it, and drops a client that sends a bad checksum", async () => {
    const source = GuestMemory.create(1024 * 1024);
    const imageFd = source.freeze();
    const server = await startMemoryServer({ imagePath: `/proc/self/fd/${imageFd}`, layout: source.layout, socketPath: socketPath() });
    try {
      const client = await rawClient(server.socketPath!);
      client.send(encodeMessage(MessageType.Hello, 1, encodeHello()));
      const hello = await client.next();
      expect(hello.type).toBe(MessageType.HelloReply);
      expect(decodeHelloReply(hello.payload)).toEqual({ version: PROTOCOL_VERSION, pageSize: PAGE_SIZE, pageCount: 256 });

      client.send(encodeMessage(MessageType.PageRequest, 2, encodePageRequest([3, 256])));
      const refused = await client.next();
      expect(refused.type).toBe(MessageType.Error);
      expect(refused.sequence).toBe(2);
      expect(decodeError(refused.payload)).toEqual({ kind: ErrorKind.OutOfRange, text: "page 256 is outside the image (256 pages)" });

      const bad = encodeMessage(MessageType.PageRequest, 3, encodePageRequest([3]));
      bad[HEADER_SIZE + 4]! ^= 0xff;
      client.send(bad);
      const dropped = await client.next();
      expect(dropped.type).toBe(MessageType.Error);
      expect(decodeError(dropped.payload).kind).toBe(ErrorKind.BadMessage);
      expect(decodeError(dropped.payload).text).toContain("checksum mismatch");
      await waitUntil(client.isClosed, 5000);
      expect(server.stats()).toMatchObject({ pagesServed: 0, requests: 1, clients: 1, errors: 2 });
    } finally {
      server.close();
      close(imageFd);
      source.close();
    }
  });

  test("listens only where it is asked (a server for other hosts makes no socket file), and refuses to listen nowhere", async () => {
    const source = GuestMemory.create(1024 * 1024);
    const imageFd = source.freeze();
    try {
      const before = readdirSync(dir);
      const server = await startMemoryServer({ imageFd, layout: source.layout, tcpAddress: "127.0.0.1" });
      try {
        expect(server.socketPath).toBeUndefined();
        expect(server.tcp).toMatchObject({ kind: "tcp", address: "127.0.0.1" });
        expect(server.tcp!.port).toBeGreaterThan(0);
        expect(readdirSync(dir)).toEqual(before);
      } finally {
        server.close();
      }
      const nowhere = await startMemoryServer({ imageFd, layout: source.layout }).catch((error: unknown) => error);
      expect(nowhere).toBeInstanceOf(SnowflockError);
      expect((nowhere as SnowflockError).message).toContain("nowhere to listen");
    } finally {
      close(imageFd);
      source.close();
    }
  });
});
