/**
 * A clone's connection to its parent's memory server with several requests in flight (fetchEach):
 * over a Unix socket and over TCP, answers come back in order and each page is the image's, and a
 * request the server refuses in the middle ends the fetch with the server's reason.
 */
import { afterAll, describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GuestMemory } from "../../src/guest-memory/guest-memory.ts";
import { PAGE_SIZE } from "../../src/guest-memory/layout.ts";
import { type MemoryServer, startMemoryServer } from "../../src/memory/memory-server.ts";
import { PIPELINE_DEPTH } from "../../src/memory/page-client.ts";
import {
  decodeHeader,
  decodePageRequest,
  encodeHelloReply,
  encodeMessage,
  encodePageData,
  HEADER_SIZE,
  MAX_PAGES_PER_REQUEST,
  MessageType,
  PROTOCOL_VERSION,
} from "../../src/memory/page-protocol.ts";
import { formatPageServer } from "../../src/memory/page-server-address.ts";
import { close } from "../../src/sys/files.ts";
const ROOT = join(import.meta.dir, "../..");

const dir = mkdtempSync(join(tmpdir(), "snowflock-page-client-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const PAGES = 512;
/** Every page different: its number in each of its words, mixed. */
function image(): GuestMemory {
  const memory = GuestMemory.create(PAGES * PAGE_SIZE);
  const words = new Uint32Array(memory.bytes.buffer, memory.bytes.byteOffset, memory.size / 4);
  for (let i = 0; i < words.length; i++) words[i] = Math.imul(i, 0x9e3779b1) ^ (i >>> 10);
  return memory;
}

/** Three times the pipeline's depth of requests, full and partial, pages out of order and asked again. */
function requests(): number[][] {
  return Array.from({ length: 3 * PIPELINE_DEPTH }, (_, r) =>
    Array.from({ length: r % 3 === 0 ? MAX_PAGES_PER_REQUEST : 1 + ((r * 7) % 40) }, (_, k) => (r * 37 + k * 11) % PAGES).filter(
      (page, k, all) => all.indexOf(page) === k,
    ),
  );
}

async function fetchInProcess(server: string, asked: number[][]): Promise<{ lines: string[]; exitCode: number }> {
  const child = Bun.spawn(
    [process.execPath, join(ROOT, "test/support/page-client-fetch.ts"), server, String(PAGES), JSON.stringify(asked)],
    {
      stdout: "pipe",
      stderr: "inherit",
    },
  );
  const [out, exitCode] = await Promise.all([new Response(child.stdout).text(), child.exited]);
  return { lines: out.trim().split("\n"), exitCode };
}

describe("a memory server's client with several requests in flight", () => {
  const withServer = async (listen: "unix" | "tcp", body: (server: MemoryServer, memory: GuestMemory) => Promise<void>) => {
    const memory = image();
    const imageFd = memory.freeze();
    const server = await startMemoryServer({
      imageFd,
      layout: memory.layout,
      ...(listen === "unix" ? { socketPath: join(dir, "memory.sock") } : { tcpAddress: "127.0.0.1" }),
    });
    try {
      await body(server, memory);
    } finally {
      server.close();
      close(imageFd);
      memory.close();
    }
  };
  const address = (server: MemoryServer) => formatPageServer(server.tcp ?? { kind: "unix", path: server.socketPath! });

  for (const listen of ["unix", "tcp"] as const)
    test(`${listen}: every answer in order, each page the image's`, async () => {
      await withServer(listen, async (server, memory) => {
        const asked = requests();
        const { lines, exitCode } = await fetchInProcess(address(server), asked);
        const expected = asked.map((pages) => {
          const hash = createHash("sha256");
          for (const page of pages) hash.update(memory.bytes.subarray(page * PAGE_SIZE, (page + 1) * PAGE_SIZE));
          return `${pages.join(",")} ${hash.digest("hex")}`;
        });
        expect(lines).toEqual(expected);
        expect(exitCode).toBe(0);
        expect(server.stats()).toMatchObject({ requests: asked.length, pagesServed: asked.flat().length, errors: 0 });
      });
    });

  test("a request refused in the middle ends the fetch with the server's reason; the answers before it came", async () => {
    await withServer("unix", async (server) => {
      const asked = requests();
      asked[PIPELINE_DEPTH + 2] = [5, PAGES + 3];
      const { lines, exitCode } = await fetchInProcess(address(server), asked);
      expect(exitCode).toBe(1);
      expect(lines.length).toBe(PIPELINE_DEPTH + 3);
      expect(lines.at(-1)).toBe(
        `error: the memory server at ${server.socketPath} refused pages 5,${PAGES + 3}: page ${PAGES + 3} is outside the image (${PAGES} pages)`,
      );
    });
  });

  test(`${PIPELINE_DEPTH} requests are on their way before the first answer`, async () => {
    // A stand-in server that answers nothing until it holds PIPELINE_DEPTH requests: a client
    // that waited for each answer before asking again would time out.
    const path = join(dir, "holding.sock");
    let held: Array<{ sequence: number; pages: number[] }> = [];
    let mostHeld = 0;
    const page = (p: number) => new Uint8Array(PAGE_SIZE).fill(p & 0xff);
    // What a socket could not take yet goes when it drains: a partial write must not cut an answer.
    const write = (socket: Socket<{ received: Buffer; unsent: Buffer }>, bytes: Uint8Array) => {
      socket.data.unsent = Buffer.concat([socket.data.unsent, bytes]);
      socket.data.unsent = socket.data.unsent.subarray(Math.max(0, socket.write(socket.data.unsent)));
    };
    const listener = Bun.listen<{ received: Buffer; unsent: Buffer }>({
      unix: path,
      socket: {
        open(socket) {
          socket.data = { received: Buffer.alloc(0), unsent: Buffer.alloc(0) };
        },
        drain(socket) {
          write(socket, new Uint8Array(0));
        },
        data(socket, chunk) {
          socket.data.received = Buffer.concat([socket.data.received, chunk]);
          for (;;) {
            const received = socket.data.received;
            if (received.byteLength < HEADER_SIZE) return;
            const header = decodeHeader(received);
            if (received.byteLength < HEADER_SIZE + header.length) return;
            const payload = received.subarray(HEADER_SIZE, HEADER_SIZE + header.length);
            socket.data.received = received.subarray(HEADER_SIZE + header.length);
            if (header.type === MessageType.Hello) {
              const reply = encodeHelloReply({ version: PROTOCOL_VERSION, pageSize: PAGE_SIZE, pageCount: PAGES });
              write(socket, encodeMessage(MessageType.HelloReply, header.sequence, reply));
              continue;
            }
            held.push({ sequence: header.sequence, pages: decodePageRequest(payload) });
            mostHeld = Math.max(mostHeld, held.length);
            if (held.length < PIPELINE_DEPTH && mostHeld < PIPELINE_DEPTH) continue;
            for (const request of held)
              write(socket, encodeMessage(MessageType.PageData, request.sequence, encodePageData(request.pages, page)));
            held = [];
          }
        },
      },
    });
    try {
      const asked = requests().slice(0, 2 * PIPELINE_DEPTH);
      const { lines, exitCode } = await fetchInProcess(`unix:${path}`, asked);
      expect(lines.map((line) => (line.startsWith("error") ? line : line.split(" ")[0]))).toEqual(asked.map((pages) => pages.join(",")));
      expect(exitCode).toBe(0);
      expect(mostHeld).toBe(PIPELINE_DEPTH);
    } finally {
      listener.stop(true);
    }
  });
});
