/**
 * Hostile descriptors (issue 10, item 4): decompression bombs refused from the header or at the
 * first bad section, with bounded memory; every lax field, duplicated section and forged size of
 * the old decoder refused with a DESCRIPTOR error; and `inspect` refusing non-regular files.
 */
import { describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { deflateSync } from "node:zlib";
import { envelopeAround as envelope, FLAG_DEFLATED, FLAG_ZERO_ELIDED, HEADER_SIZE, sealEnvelope } from "../../src/descriptor/envelope.ts";
import { type Descriptor, decodeDescriptor, encodeDescriptor, MAX_DESCRIPTOR_FILE_BYTES } from "../../src/descriptor/format.ts";
import { MAX_PAYLOAD_BYTES } from "../../src/descriptor/layout.ts";
import { SectionWriter, walkSections } from "../../src/sections.ts";
import { decodeZeroElided } from "../../src/wasm/descriptor-codec.ts";
import { snowflock } from "../support/cli.ts";
import { random, refusal, sampleDescriptor, sampleVcpu } from "../support/descriptor-sample.ts";

const MiB = 1024 * 1024;
const BLOCK = 4096;
const Section = { META: 1, DEVICES: 3, PAGES: 5 };

/**
 * A zero-elided payload built by hand (format in wasm/descriptor-codec.ts): `rawBytes` announced,
 * the first block stored as the literal `first` (zero-padded to 4 KiB), every other block elided.
 */
function zeroBomb(rawBytes: number, first?: Uint8Array): Uint8Array {
  const blocks = Math.ceil(rawBytes / BLOCK);
  const map = new Uint8Array(Math.ceil(blocks / 8)).fill(0xff);
  let stream = new Uint8Array([0x00]); // no literals, end of stream
  if (first) {
    map[0] = 0xfe;
    const literals = new Uint8Array(BLOCK);
    literals.set(first);
    const extra = BLOCK - 15; // the token's 15 plus bytes of 255 and a last one below 255
    stream = new Uint8Array([0xf0, ...new Array(Math.floor(extra / 255)).fill(255), extra % 255, ...literals]);
  }
  const stored = new Uint8Array(4 + map.byteLength + stream.byteLength);
  new DataView(stored.buffer).setUint32(0, rawBytes, true);
  stored.set(map, 4);
  stored.set(stream, 4 + map.byteLength);
  // Any writer can make such an envelope: a valid CRC is no obstacle.
  return envelope(stored, rawBytes, FLAG_ZERO_ELIDED);
}

function sectionBytes(type: number, body: Uint8Array): Uint8Array {
  const w = new SectionWriter();
  w.add(type, body);
  return w.bytes();
}

function metaSection(meta: unknown): Uint8Array {
  return sectionBytes(Section.META, new TextEncoder().encode(JSON.stringify(meta)));
}

const good = encodeDescriptor(sampleDescriptor());
const goodPayload = decodeZeroElided(good.subarray(HEADER_SIZE), Number(new DataView(good.buffer).getBigUint64(24, true)));
const goodSections = () => [...walkSections(goodPayload)].map(({ type, body }) => ({ type, body: body.slice() }));

function payloadOf(sections: Array<{ type: number; body: Uint8Array }>): Uint8Array {
  const w = new SectionWriter();
  for (const s of sections) w.add(s.type, s.body);
  return w.bytes();
}

/** How much this process's resident memory grows while `run` refuses its descriptor. */
function rssGrowth(run: () => string): { growth: number; message: string } {
  decodeDescriptor(good); // the codec kernel is loaded before measuring
  Bun.gc(true);
  const before = process.memoryUsage.rss();
  const message = run();
  const growth = process.memoryUsage.rss() - before;
  return { growth, message };
}

function withMeta(change: (meta: Record<string, unknown>) => void): Uint8Array {
  const d = sampleDescriptor();
  change(d.meta as unknown as Record<string, unknown>);
  return encodeDescriptor(d);
}

describe("hostile descriptors", () => {
  test("the filed 8 KiB bomb (256 MiB of elided zeros) is refused from its header, without allocating", () => {
    const bomb = zeroBomb(256 * MiB);
    expect(bomb.byteLength).toBeLessThan(8300);
    const { growth, message } = rssGrowth(() => refusal(bomb));
    expect(message).toContain("over the");
    expect(growth).toBeLessThan(32 * MiB);
  });

  test("a bomb the size limits let through is refused at its first bad section, in bounded memory", () => {
    // The largest payload the header check lets through: all zeros (millions of empty sections of
    // type 0), or a valid 256 GiB metadata section followed by zeros.
    const raw = Math.floor(MAX_PAYLOAD_BYTES / BLOCK) * BLOCK;
    const meta = {
      ...sampleDescriptor().meta,
      memorySize: 256 * 1024 * MiB,
      regions: [{ guestAddress: 0, size: 256 * 1024 * MiB, offset: 0 }],
    };
    for (const [first, why] of [
      [undefined, "unknown section type 0"],
      [metaSection(meta), "unknown section type 0"],
    ] as const) {
      const bomb = zeroBomb(raw, first ?? new Uint8Array(0));
      const { growth, message } = rssGrowth(() => refusal(bomb));
      expect(message).toContain(why);
      // The payload itself is decoded (once in the kernel, once copied out); nothing per section.
      expect(growth).toBeLessThan(3 * MAX_PAYLOAD_BYTES);
    }
  });

  test("a huge memory size (4 TiB, with a bitmap to match) is refused", () => {
    const d = sampleDescriptor();
    d.meta.memorySize = 4 * 1024 * 1024 * MiB;
    d.meta.regions = [{ guestAddress: 0, size: d.meta.memorySize, offset: 0 }];
    d.nonZeroPages = new Uint8Array(d.meta.memorySize / BLOCK / 8);
    const metaBody = new TextEncoder().encode(JSON.stringify(d.meta));
    const sections: Array<{ type: number; body: Uint8Array }> = goodSections().map((s) =>
      s.type === Section.META ? { type: s.type, body: metaBody } : s,
    );
    const bitmap = sections.findIndex((s) => s.type === 4);
    sections[bitmap] = { type: 4, body: d.nonZeroPages };
    const payload = payloadOf(sections);
    expect(refusal(envelope(deflateSync(payload), payload.byteLength, FLAG_DEFLATED))).toContain("over the");
    // And at the metadata itself, in a payload small enough to pass the header check.
    expect(refusal(withMeta((m) => (m.memorySize = 4 * 1024 * 1024 * MiB)))).toContain("memory size must be");
  });

  test("region offsets: negative, unaligned, overlapping or outside memory are refused", () => {
    const half = 32 * MiB;
    const cases: Array<[unknown, string]> = [
      [[{ guestAddress: 0, size: 64 * MiB, offset: -4096 }], "offset must be"],
      [[{ guestAddress: 0, size: half, offset: 100 }], "offset must be"],
      [
        [
          { guestAddress: 0, size: half, offset: 0 },
          { guestAddress: 4 * 1024 * MiB, size: half, offset: half / 2 },
        ],
        "overlap in the backing",
      ],
      [
        [
          { guestAddress: 0, size: half, offset: 0 },
          { guestAddress: half / 2, size: half, offset: half },
        ],
        "overlap in guest-physical space",
      ],
      [[{ guestAddress: 0, size: half, offset: 48 * MiB }], "offset must be"],
      [[{ guestAddress: 0, size: "64M", offset: 0 }], "size must be"],
      [[], "list of 1 to"],
    ];
    for (const [regions, why] of cases) expect(refusal(withMeta((m) => (m.regions = regions)))).toContain(why);
  });

  test("metadata fields of the wrong type, range or shape are refused, and null metadata is a DESCRIPTOR error", () => {
    const cases: Array<[(m: Record<string, unknown>) => void, string]> = [
      [(m) => (m.name = 42), "the name is not printable"],
      [(m) => (m.name = "\u001b[2Jowned"), "the name is not printable"],
      [(m) => (m.cmdline = { rm: true }), "the command line is not printable"],
      [(m) => (m.createdAt = null), "the capture time is not printable"],
      [(m) => (m.createdAt = "yesterday"), "not an ISO date"],
      [(m) => (m.memorySize = -4096), "memory size must be"],
      [(m) => (m.surprise = 1), 'unknown field "surprise"'],
      [(m) => (m.cloneCall = { block: -8, returns: "zero" }), "clone call's block must be"],
      [(m) => (m.cloneCall = { block: 4096, returns: "everything" }), "returns neither"],
      [(m) => (m.freePageMap = { address: 0, frames: 1, more: 2 }), 'unknown field "more"'],
    ];
    for (const [change, why] of cases) expect(refusal(withMeta(change))).toContain(why);
    const [, ...rest] = goodSections();
    for (const meta of [null, [], "kvm", 7]) {
      const payload = payloadOf([{ type: Section.META, body: new TextEncoder().encode(JSON.stringify(meta)) }, ...rest]);
      expect(refusal(sealEnvelope(payload))).toContain("metadata is not a JSON object");
    }
  });

  test("2000 vCPUs, a foreign mp_state or set reserved bits are refused", () => {
    const many = sampleDescriptor();
    many.state.vcpus = Array.from({ length: 2000 }, () => sampleVcpu(1));
    expect(refusal(encodeDescriptor(many))).toContain("more than 64 vCPUs");
    const mp = sampleDescriptor();
    mp.state.vcpus[0]!.mpState = 77;
    expect(refusal(encodeDescriptor(mp))).toContain("mp_state 77");
    const reserved = goodPayload.slice();
    reserved[2] = 1; // the first section header's reserved u16
    expect(refusal(sealEnvelope(reserved))).toContain("reserved bits");
  });

  test("duplicated sections, pages sent twice and metadata out of place are refused", () => {
    const sections = goodSections();
    for (const type of [Section.META, Section.DEVICES, Section.PAGES, 4]) {
      const again = sections.find((s) => s.type === type)!;
      expect(refusal(sealEnvelope(new Uint8Array([...goodPayload, ...sectionBytes(type, again.body)])))).toContain("appears twice");
    }
    const twice = new Uint8Array(4 + 2 * 8 + 2 * BLOCK);
    const v = new DataView(twice.buffer);
    v.setUint32(0, 2, true);
    v.setBigUint64(4, 3n, true);
    v.setBigUint64(12, 3n, true);
    twice.set(random(BLOCK, 5), 20);
    twice.set(random(BLOCK, 6), 20 + BLOCK);
    const withTwice = sections.map((s) => (s.type === Section.PAGES ? { type: s.type, body: twice } : s));
    expect(refusal(sealEnvelope(payloadOf(withTwice)))).toContain("sent along twice");
    const metaLast = [...sections.slice(1), sections[0]!];
    expect(refusal(sealEnvelope(payloadOf(metaLast)))).toContain("comes before the metadata");
  });

  test("old valid descriptors still decode", () => {
    const d: Descriptor = sampleDescriptor();
    d.meta.cloneCall = { block: 0x9000, returns: "clone-id" };
    d.meta.freePageMap = { address: 0x200000, frames: 16384 };
    d.freePages = new Uint8Array(d.nonZeroPages.byteLength).fill(0xf0);
    expect(decodeDescriptor(encodeDescriptor(d)).descriptor).toEqual(d);
  });
});

describe("inspect refuses what is not a descriptor file, in one line", () => {
  const dir = mkdtempSync(join(tmpdir(), "snowflock-inspect-"));
  const oneLine = (stderr: string) => stderr.split("\n").filter((l) => l.trim().length > 0);

  test("/dev/zero, a FIFO, an oversized file and the bomb", async () => {
    const fifo = join(dir, "fifo");
    expect(spawnSync("mkfifo", [fifo]).status).toBe(0);
    const large = join(dir, "large.sfd");
    writeFileSync(large, "");
    truncateSync(large, MAX_DESCRIPTOR_FILE_BYTES + 1);
    const bomb = join(dir, "bomb.sfd");
    writeFileSync(bomb, zeroBomb(256 * MiB));
    const cases: Array<[string, string]> = [
      ["/dev/zero", "not a regular file"],
      [fifo, "not a regular file"],
      [large, "larger than"],
      [bomb, "over the"],
    ];
    try {
      for (const [file, why] of cases) {
        const result = await snowflock(["inspect", file], {}, 20_000);
        expect(result.status).not.toBe(0);
        const lines = oneLine(result.stderr);
        expect(lines).toHaveLength(1);
        expect(lines[0]).toContain(why);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
