/**
 * copyPages and captureImage over stand-in domains: frames held in this process, "mapped" into one buffer per
 * mapping as libxenforeignmemory would (missing frames reported per page) and written back on
 * unmap. The real thing runs in test/xen against Xen.
 */
import { ptr } from "bun:ffi";
import { closeSync, fstatSync, readSync } from "node:fs";
import { describe, expect, test } from "bun:test";
import type { ForeignMapping, ForeignMemory } from "../../src/backend/xen/foreign-memory.ts";
import {
  captureImage,
  captureImagePart,
  createImageFile,
  imageParts,
  joinImageParts,
  trimImageFile,
} from "../../src/backend/xen/memory-image.ts";
import { COPY_BATCH, copyPages } from "../../src/backend/xen/page-copy.ts";
import { fetchIntoShells, UnaskedPages } from "../../src/backend/xen/page-fetch.ts";

const PAGE = 4096;
const ENOENT = -2;

class StandInMemory {
  readonly domains = new Map<number, Map<number, Uint8Array>>();
  private readonly open = new Map<number, { domid: number; frames: BigUint64Array; buffer: Uint8Array }>();
  maps = 0;

  map(domid: number, _prot: number, frames: BigUint64Array): ForeignMapping {
    const pages = this.domains.get(domid)!;
    const buffer = new Uint8Array(frames.length * PAGE);
    const errors = new Int32Array(frames.length);
    frames.forEach((gfn, i) => {
      const page = pages.get(Number(gfn));
      if (page) buffer.set(page, i * PAGE);
      else errors[i] = ENOENT;
    });
    const address = ptr(buffer);
    this.open.set(Number(address), { domid, frames, buffer });
    this.maps++;
    return { address, pages: frames.length, errors };
  }

  unmap(mapping: ForeignMapping): void {
    const m = this.open.get(Number(mapping.address))!;
    const pages = this.domains.get(m.domid)!;
    m.frames.forEach((gfn, i) => {
      if (pages.has(Number(gfn))) pages.set(Number(gfn), m.buffer.slice(i * PAGE, (i + 1) * PAGE));
    });
    this.open.delete(Number(mapping.address));
  }
}

const filled = (byte: number) => new Uint8Array(PAGE).fill(byte);

/** A PVH-like physmap: RAM frames 0..ram-1 and special frames just below maxGpfn. */
function domain(ram: number, special: number[], content: (gfn: number) => Uint8Array): Map<number, Uint8Array> {
  const pages = new Map<number, Uint8Array>();
  for (let gfn = 0; gfn < ram; gfn++) pages.set(gfn, content(gfn));
  for (const gfn of special) pages.set(gfn, content(gfn));
  return pages;
}

describe("copyPages", () => {
  const MAX = 0xfefff;
  const SPECIAL = [0xfeff0, 0xfeff5, MAX];
  const RAM = 3 * COPY_BATCH + 17;

  test("every clone ends with the parent's RAM and special pages; zero pages cost no copy; builder-written pages are cleared", () => {
    const memory = new StandInMemory();
    const parentContent = (gfn: number) => (gfn % 3 === 0 ? filled(0) : filled((gfn % 251) + 1));
    memory.domains.set(1, domain(RAM, SPECIAL, parentContent));
    // Shells: scrubbed (zero) pages, except a few the domain builder wrote (kernel, start info, a ring).
    for (const clone of [2, 3])
      memory.domains.set(
        clone,
        domain(RAM, SPECIAL, (gfn) => (gfn === 0x100 || gfn === 0x101 || gfn === 0xfeff5 || gfn === 3 ? filled(0xee) : filled(0))),
      );
    const progress: number[] = [];
    const result = copyPages(memory as unknown as ForeignMemory, 1, [2, 3], MAX, (n) => progress.push(n));
    expect(result.pages).toBe(RAM + SPECIAL.length);
    expect(result.zeroPages).toBe([...memory.domains.get(1)!.values()].filter((p) => p.every((b) => b === 0)).length);
    for (const clone of [2, 3]) {
      const pages = memory.domains.get(clone)!;
      for (const [gfn, page] of memory.domains.get(1)!) expect(Buffer.compare(pages.get(gfn)!, page)).toBe(0);
    }
    expect(progress.at(-1)).toBe(result.pages);
    // Up through the RAM and one empty batch above it; down from the top to the first empty batch.
    expect(result.batches).toBe(4 + 1);
  });

  test("a clone missing a frame the parent has fails, naming the frame", () => {
    const memory = new StandInMemory();
    memory.domains.set(
      1,
      domain(100, [MAX], () => filled(7)),
    );
    memory.domains.set(
      2,
      domain(99, [MAX], () => filled(0)),
    );
    expect(() => copyPages(memory as unknown as ForeignMemory, 1, [2], MAX)).toThrow(
      "clone domain 2 has no page at frame 0x63 where its parent 1 has one",
    );
  });
});

describe("captureImage", () => {
  const RAM = COPY_BATCH + 5;
  const content = (gfn: number) => (gfn % 3 === 0 ? new Uint8Array(PAGE) : filled((gfn % 250) + 1));

  test("the parent's RAM lands in a memfd at its frame's offset; zero frames are holes, counted and left out of the bitmap", () => {
    const memory = new StandInMemory();
    memory.domains.set(1, domain(RAM, [], content));
    const image = captureImage(memory as unknown as ForeignMemory, 1, RAM, "test.image");
    try {
      expect(image.pages).toBe(RAM);
      expect(image.zeroPages).toBe(Math.ceil(RAM / 3));
      const page = new Uint8Array(PAGE);
      for (const gfn of [0, 1, 2, 3, COPY_BATCH - 1, COPY_BATCH, RAM - 1]) {
        expect(((image.nonZeroPages[gfn >> 3]! >> (gfn & 7)) & 1) === 1).toBe(gfn % 3 !== 0);
        expect(readSync(image.fd, page, 0, PAGE, gfn * PAGE)).toBe(PAGE);
        expect(page).toEqual(content(gfn));
      }
    } finally {
      closeSync(image.fd);
    }
  });

  test("captured in parts (one per helper thread), the image is the same as captured whole", () => {
    const pages = 3 * COPY_BATCH + 7;
    const memory = new StandInMemory();
    memory.domains.set(1, domain(pages, [], content));
    const whole = captureImage(memory as unknown as ForeignMemory, 1, pages, "whole.image");
    for (const threads of [1, 2, 3, 8]) {
      const ranges = imageParts(pages, threads);
      expect(ranges.reduce((n, r) => n + r.count, 0)).toBe(pages);
      expect(ranges.length).toBeLessThanOrEqual(threads);
      ranges.slice(1).forEach((r, i) => expect(r.first).toBe(ranges[i]!.first + ranges[i]!.count));
      const file = createImageFile("parts.image", pages);
      try {
        const image = joinImageParts(
          file,
          ranges.map((r) => captureImagePart(memory as unknown as ForeignMemory, 1, file, r.first, r.count)),
        );
        expect(image.zeroPages).toBe(whole.zeroPages);
        expect(image.nonZeroPages).toEqual(whole.nonZeroPages);
        trimImageFile(file, image.nonZeroPages);
        // Zero frames are holes now: the file's blocks hold the data frames only.
        expect(fstatSync(file.fd).blocks * 512).toBe((pages - image.zeroPages) * PAGE);
        const a = new Uint8Array(PAGE);
        const b = new Uint8Array(PAGE);
        for (let gfn = 0; gfn < pages; gfn += 97) {
          readSync(file.fd, a, 0, PAGE, gfn * PAGE);
          readSync(whole.fd, b, 0, PAGE, gfn * PAGE);
          expect(a).toEqual(b);
        }
      } finally {
        closeSync(file.fd);
      }
    }
    closeSync(whole.fd);
  });

  test("a frame the parent lacks fails the capture, naming the frame", () => {
    const memory = new StandInMemory();
    const pages = domain(RAM, [], content);
    pages.delete(COPY_BATCH + 2);
    memory.domains.set(1, pages);
    expect(() => captureImage(memory as unknown as ForeignMemory, 1, RAM, "test.image")).toThrow(
      `domain 1 frame 0x${(COPY_BATCH + 2).toString(16)}`,
    );
  });
});

describe("fetchIntoShells (a parent on another host, eager)", () => {
  /** A memory server stand-in: the parent's pages by frame, with the requests it got. */
  const source = (parent: Map<number, Uint8Array>) => {
    const requests: number[][] = [];
    return {
      requests,
      fetch(pages: number[]) {
        requests.push(pages);
        return pages.map((p) => parent.get(p)!);
      },
    };
  };

  test("fetches each data frame once for every shell, zeroes what the builder left where the parent had zero", () => {
    const frames = 2 * COPY_BATCH + 100;
    // Every third frame holds data; the rest are zero in the parent.
    const parent = domain(frames, [], (gfn) => (gfn % 3 === 0 ? filled((gfn % 250) + 1) : new Uint8Array(PAGE)));
    const bitmap = new Uint8Array(Math.ceil(frames / 8));
    for (let gfn = 0; gfn < frames; gfn += 3) bitmap[gfn >> 3]! |= 1 << (gfn & 7);
    const memory = new StandInMemory();
    // Shells as the domain builder left them: a stub kernel here and there.
    for (const shell of [5, 6])
      memory.domains.set(
        shell,
        domain(frames, [], (gfn) => (gfn % 7 === 1 ? filled(0xee) : new Uint8Array(PAGE))),
      );
    const server = source(parent);
    const result = fetchIntoShells(memory as unknown as ForeignMemory, server, [5, 6], frames, bitmap);
    expect(result.pagesFetched).toBe(Math.ceil(frames / 3));
    expect(result.pagesFetched + result.pagesZero).toBe(frames);
    // Once per frame, however many shells.
    expect(server.requests.flat()).toEqual(Array.from({ length: Math.ceil(frames / 3) }, (_, i) => i * 3));
    for (const shell of [5, 6])
      for (let gfn = 0; gfn < frames; gfn++) expect(memory.domains.get(shell)!.get(gfn)).toEqual(parent.get(gfn)!);
  });

  test("pages another host asked for (multicast) are written from what came and not asked for again", () => {
    const frames = COPY_BATCH + 64;
    const parent = domain(frames, [], (gfn) => filled((gfn % 200) + 1));
    const bitmap = new Uint8Array(Math.ceil(frames / 8)).fill(0xff);
    const memory = new StandInMemory();
    memory.domains.set(
      7,
      domain(frames, [], () => new Uint8Array(PAGE)),
    );
    const unasked = new UnaskedPages();
    const server = source(parent);
    // Another host's answers arrive while this one fetches its first pages: frames 3, 500 and COPY_BATCH + 1.
    const fetch = server.fetch;
    server.fetch = (pages: number[]) => {
      if (server.requests.length === 0) for (const gfn of [3, 500, COPY_BATCH + 1]) unasked.keep(gfn, parent.get(gfn)!);
      return fetch(pages);
    };
    const result = fetchIntoShells(memory as unknown as ForeignMemory, server, [7], frames, bitmap, unasked);
    expect(result).toMatchObject({ pagesFetched: frames, pagesZero: 0, pagesUnasked: 2 }); // frame 3 was asked for before it came
    expect(server.requests.flat()).not.toContain(500);
    expect(server.requests.flat()).not.toContain(COPY_BATCH + 1);
    for (let gfn = 0; gfn < frames; gfn++) expect(memory.domains.get(7)!.get(gfn)).toEqual(parent.get(gfn)!);
  });

  test("over a source with requests in flight (a memory server's connection) each answer lands where its request was made", () => {
    const frames = 2 * COPY_BATCH + 300;
    const parent = domain(frames, [], (gfn) => filled((gfn % 230) + 1));
    const bitmap = new Uint8Array(Math.ceil(frames / 8));
    for (let gfn = 0; gfn < frames; gfn++) if (gfn % 5 !== 2) bitmap[gfn >> 3]! |= 1 << (gfn & 7);
    const memory = new StandInMemory();
    memory.domains.set(
      4,
      domain(frames, [], () => new Uint8Array(PAGE)),
    );
    const server = source(parent);
    let mostInFlight = 0;
    // Like PageClient: asks up to three requests ahead of the answer it hands over.
    const pipelined = {
      ...server,
      fetchEach(requests: Iterable<number[]>, each: (pages: number[], contents: Uint8Array[]) => void) {
        const next = requests[Symbol.iterator]();
        const inFlight: number[][] = [];
        for (;;) {
          for (let request = next.next(); ; request = next.next()) {
            if (request.done) break;
            inFlight.push(request.value);
            if (inFlight.length === 3) break;
          }
          mostInFlight = Math.max(mostInFlight, inFlight.length);
          const pages = inFlight.shift();
          if (!pages) return;
          each(pages, server.fetch(pages));
        }
      },
    };
    const result = fetchIntoShells(memory as unknown as ForeignMemory, pipelined, [4], frames, bitmap);
    expect(mostInFlight).toBe(3);
    expect(result).toMatchObject({ pagesFetched: frames - Math.ceil((frames - 2) / 5), pagesUnasked: 0 });
    for (let gfn = 0; gfn < frames; gfn++)
      expect(memory.domains.get(4)!.get(gfn)).toEqual(gfn % 5 === 2 ? new Uint8Array(PAGE) : parent.get(gfn)!);
  });

  test("a shell without a frame the parent has fails, naming the frame; a short bitmap is refused", () => {
    const parent = domain(64, [], () => filled(1));
    const bitmap = new Uint8Array(8).fill(0xff);
    const memory = new StandInMemory();
    const shell = domain(64, [], () => new Uint8Array(PAGE));
    shell.delete(40);
    memory.domains.set(9, shell);
    expect(() => fetchIntoShells(memory as unknown as ForeignMemory, source(parent), [9], 64, bitmap)).toThrow("frame 0x28");
    expect(() => fetchIntoShells(memory as unknown as ForeignMemory, source(parent), [9], 64, new Uint8Array(2))).toThrow(
      "a page bitmap of 2 bytes for 64 frames",
    );
  });
});
