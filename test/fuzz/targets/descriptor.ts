/**
 * Descriptor decoders: the envelope (header, checksum, payload codecs), the sections and fields
 * (decodeDescriptor on a payload sealed in a valid envelope, so mutations reach past the CRC), and
 * the zero-elided codec kernel (checked against its plain TypeScript reference).
 */
import { deflateSync } from "node:zlib";
import * as abi from "../../../src/backend/kvm/abi.ts";
import type { KvmState } from "../../../src/backend/kvm/persist.ts";
import { type Descriptor, decodeDescriptor, encodeDescriptor } from "../../../src/descriptor/format.ts";
import { HEADER_SIZE, openEnvelope, sealEnvelope } from "../../../src/descriptor/envelope.ts";
import { SectionWriter, walkSections } from "../../../src/sections.ts";
import { SnowflockError } from "../../../src/errors.ts";
import { memoryLayout, PAGE_SIZE } from "../../../src/guest-memory/layout.ts";
import { DescriptorCodecError, decodeZeroElided, encodeZeroElided } from "../../../src/wasm/descriptor-codec.ts";
import { referenceDecode } from "../../support/descriptor-codec-reference.ts";
import type { Rng } from "../../support/rng.ts";
import { check, type FuzzTarget, same } from "../engine.ts";
import { mutateJson, parseJson, stringify } from "../json.ts";
import { mutateBytes } from "../mutate.ts";

const isDescriptorError = (error: unknown) => error instanceof SnowflockError && error.code === "DESCRIPTOR";

/** Fast filler: page contents need not be random byte by byte. */
function filler(rng: Rng, n: number): Uint8Array {
  const out = new Uint8Array(n);
  const pattern = rng.bytes(rng.int(1, 64));
  for (let i = 0; i < n; i++) out[i] = pattern[i % pattern.length]!;
  if (rng.bool(0.3)) out.fill(0, rng.int(0, n));
  return out;
}

export function randomDescriptor(rng: Rng): Descriptor {
  const pageCount = rng.pick([16, 64, 256, 1024, 4096]);
  const memorySize = pageCount * PAGE_SIZE;
  const vcpu = () => ({
    regs: filler(rng, abi.kvm_regs.size),
    sregs: filler(rng, abi.kvm_sregs.size),
    xsave: filler(rng, abi.kvm_xsave.size),
    xcrs: filler(rng, abi.kvm_xcrs.size),
    lapic: filler(rng, abi.kvm_lapic_state.size),
    events: filler(rng, abi.kvm_vcpu_events.size),
    debugregs: filler(rng, abi.kvm_debugregs.size),
    mpState: rng.int(0, abi.KVM_MP_STATE_SIPI_RECEIVED),
    msrs: Array.from({ length: rng.int(0, 4) }, () => ({ index: rng.int(0, 0xffffffff), data: BigInt(rng.int(0, 0xffffffff)) << 16n })),
  });
  const bitmap = () => rng.bytes(Math.ceil(pageCount / 8));
  const pages = new Map<number, Uint8Array>();
  for (let n = rng.int(0, 3); n > 0; n--) pages.set(rng.int(0, pageCount - 1), filler(rng, PAGE_SIZE));
  const state: KvmState = {
    backend: "kvm",
    memorySize,
    vcpus: Array.from({ length: rng.int(1, 3) }, vcpu),
    devices: {
      picMaster: filler(rng, abi.kvm_irqchip.size),
      picSlave: filler(rng, abi.kvm_irqchip.size),
      ioapic: filler(rng, abi.kvm_irqchip.size),
      pit: filler(rng, abi.kvm_pit_state2.size),
      clock: filler(rng, abi.kvm_clock_data.size),
    },
  };
  const d: Descriptor = {
    meta: {
      backend: "kvm",
      name: `vm${rng.int(0, 99)}`,
      cmdline: rng.pick(["serve", "sha256 size=1M"]),
      memorySize,
      regions: memoryLayout(memorySize).regions,
      createdAt: new Date(1_700_000_000_000 + rng.int(0, 1e9)).toISOString(),
    },
    state,
    nonZeroPages: bitmap(),
    pages,
  };
  if (rng.bool()) d.freePages = bitmap();
  if (rng.bool()) d.meta.cloneCall = { block: rng.int(0, memorySize - 64), returns: rng.pick(["clone-id", "zero"] as const) };
  if (rng.bool()) d.meta.freePageMap = { address: rng.int(0, memorySize - 1), frames: pageCount };
  return d;
}

const META_KEYS = [
  "backend",
  "name",
  "cmdline",
  "memorySize",
  "regions",
  "guestAddress",
  "offset",
  "size",
  "createdAt",
  "cloneCall",
  "block",
  "returns",
  "freePageMap",
  "address",
  "frames",
];
const SECTION_TYPES = [0, 1, 2, 3, 4, 5, 6, 7, 0xffff];

/** Section-aware mutations: sections dropped, repeated, retyped, reordered, resized; fields and metadata changed. */
function mutateSections(payload: Uint8Array, rng: Rng, corpus: readonly Uint8Array[]): Uint8Array {
  let sections: Array<{ type: number; body: Uint8Array }>;
  try {
    sections = [...walkSections(payload)].map((s) => ({ ...s }));
  } catch {
    return mutateBytes(payload, rng, corpus);
  }
  if (sections.length === 0) return mutateBytes(payload, rng, corpus);
  const i = rng.int(0, sections.length - 1);
  const section = sections[i]!;
  switch (rng.int(0, 7)) {
    case 0:
      sections.splice(i, 1);
      break;
    case 1:
      sections.splice(rng.int(0, sections.length), 0, { ...section });
      break;
    case 2:
      section.type = rng.pick(SECTION_TYPES);
      break;
    case 3: {
      const meta = sections.find((s) => s.type === 1);
      const tree = meta && parseJson(new TextDecoder().decode(meta.body));
      if (meta && tree !== undefined) meta.body = new TextEncoder().encode(stringify(mutateJson(tree, rng, META_KEYS)));
      break;
    }
    case 4:
      section.body = mutateBytes(section.body, rng, corpus);
      break;
    case 5:
      sections.splice(rng.int(0, sections.length - 1), 0, ...sections.splice(i, 1));
      break;
    case 6: {
      const other = readSectionsOrNone(rng.pick(corpus));
      if (other.length > 0) sections.splice(rng.int(0, sections.length), 0, rng.pick(other));
      break;
    }
    default: {
      // A count or size field at the start of a body (vCPU index, page count) set to an edge.
      section.body = section.body.slice();
      const edge = rng.pick([0, 1, 2, 63, 64, 65, 256, 257, 0xffff, 0xffffffff]);
      if (section.body.byteLength >= 4) new DataView(section.body.buffer).setUint32(0, edge, true);
    }
  }
  const w = new SectionWriter();
  for (const s of sections) w.add(s.type, s.body);
  const out = w.bytes();
  // A section length that lies about its body.
  if (rng.bool(0.1) && out.byteLength >= 8) new DataView(out.buffer).setUint32(4, rng.pick([0, 1, out.byteLength, 0xffffffff]), true);
  return out;
}

function readSectionsOrNone(payload: Uint8Array): Array<{ type: number; body: Uint8Array }> {
  try {
    return [...walkSections(payload)];
  } catch {
    return [];
  }
}

/** The payload a descriptor seals (the real encoder's sections). */
const payloadOf = (d: Descriptor) => openEnvelope(encodeDescriptor(d)).payload;

export const descriptorTarget: FuzzTarget = {
  name: "descriptor",
  seeds: (rng) => Array.from({ length: 6 }, () => payloadOf(randomDescriptor(rng))),
  mutate: mutateSections,
  run(payload) {
    decodeDescriptor(sealEnvelope(payload));
    return "accepted";
  },
  expected: isDescriptorError,
  roundTrip(rng) {
    const d = randomDescriptor(rng);
    same(decodeDescriptor(encodeDescriptor(d)).descriptor, d, "decodeDescriptor(encodeDescriptor(d))");
  },
};

const FLAGS = { RAW: 0, DEFLATED: 1, ZERO_ELIDED: 2 };

/** An envelope around `stored` whatever it holds: the header fields as given, the checksum right. */
function envelope(stored: Uint8Array, rawBytes: number, flags: number, version = 1): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE + stored.byteLength);
  const v = new DataView(out.buffer);
  out.set(new TextEncoder().encode("SFLKDESC"), 0);
  v.setUint16(8, version, true);
  v.setUint16(10, flags, true);
  v.setBigUint64(16, BigInt(stored.byteLength), true);
  v.setBigUint64(24, BigInt(rawBytes), true);
  out.set(stored, HEADER_SIZE);
  return reseal(out);
}

function reseal(file: Uint8Array): Uint8Array {
  if (file.byteLength < HEADER_SIZE) return file;
  new DataView(file.buffer, file.byteOffset).setUint32(12, Bun.hash.crc32(file.subarray(HEADER_SIZE)), true);
  return file;
}

/** A zero-elided payload of `n` bytes, all zero: a few KiB that expand to n. */
function zeroBomb(n: number): Uint8Array {
  const out = new Uint8Array(4 + Math.ceil(n / PAGE_SIZE / 8) + 1).fill(0xff);
  new DataView(out.buffer).setUint32(0, n, true);
  out[out.byteLength - 1] = 0;
  return out;
}

export const envelopeTarget: FuzzTarget = {
  name: "descriptor-envelope",
  seeds(rng) {
    const payloads = Array.from({ length: 3 }, () => payloadOf(randomDescriptor(rng)));
    const [first, second] = [payloads[0]!, payloads[1]!];
    const legacy = [envelope(deflateSync(first), first.byteLength, FLAGS.DEFLATED), envelope(second, second.byteLength, FLAGS.RAW)];
    return [...payloads.map(sealEnvelope), ...legacy];
  },
  mutate(file, rng, corpus) {
    const out = rng.bool(0.7) ? file.slice() : mutateBytes(file, rng, corpus);
    if (out.byteLength < HEADER_SIZE) return out;
    const v = new DataView(out.buffer);
    const stored = out.subarray(HEADER_SIZE);
    switch (rng.int(0, 5)) {
      case 0:
        v.setUint16(8, rng.pick([0, 1, 2, 0xffff]), true);
        break;
      case 1:
        v.setUint16(10, rng.pick([0, 1, 2, 3, 4, 0x8000]), true);
        break;
      case 2:
        v.setBigUint64(16, BigInt(rng.pick([0, 1, stored.byteLength - 1, stored.byteLength + 1, 2 ** 28, 2 ** 28 + 1, 2 ** 53])), true);
        break;
      case 3: {
        const nearby = Number(v.getBigUint64(24, true)) + rng.int(-4, 4);
        v.setBigUint64(24, BigInt(rng.pick([0, 1, 4096, nearby, 2 ** 28, 2 ** 28 + 1, 2 ** 40])), true);
        break;
      }
      case 4: {
        // Payloads small on disk and large in memory: the decompression bombs of issue 10, item 4.
        const n = rng.pick([1, 4, 16, 64, 256]) * 2 ** 20;
        return rng.bool() ? envelope(zeroBomb(n), n, FLAGS.ZERO_ELIDED) : envelope(stored, n, FLAGS.DEFLATED);
      }
      default:
        return out;
    }
    return rng.bool(0.85) ? reseal(out) : out;
  },
  run(file) {
    openEnvelope(file);
    return "accepted";
  },
  expected: isDescriptorError,
  roundTrip(rng) {
    const payload = payloadOf(randomDescriptor(rng));
    same(openEnvelope(sealEnvelope(payload)).payload, payload, "openEnvelope(sealEnvelope(p))");
  },
};

/** Codec inputs: the raw length (u32, capped at 4 MiB so a case stays small), then the encoded bytes. */
const MAX_CODEC_RAW = 4 * 2 ** 20;

function codecInput(raw: Uint8Array): Uint8Array {
  const encoded = encodeZeroElided(raw);
  const out = new Uint8Array(4 + encoded.byteLength);
  new DataView(out.buffer).setUint32(0, raw.byteLength, true);
  out.set(encoded, 4);
  return out;
}

function randomRaw(rng: Rng): Uint8Array {
  const blocks = Array.from({ length: rng.int(0, 12) }, () => (rng.bool(0.4) ? new Uint8Array(PAGE_SIZE) : filler(rng, PAGE_SIZE)));
  const raw = Buffer.concat([...blocks, filler(rng, rng.int(0, 4000))]);
  return new Uint8Array(raw);
}

export const codecTarget: FuzzTarget = {
  name: "descriptor-codec",
  seeds: (rng) => Array.from({ length: 8 }, () => codecInput(randomRaw(rng))),
  run(input) {
    if (input.byteLength < 4) return "refused";
    const rawLength = new DataView(input.buffer, input.byteOffset).getUint32(0, true) % (MAX_CODEC_RAW + 1);
    const encoded = input.subarray(4);
    const reference = referenceDecode(encoded, rawLength);
    let decoded: Uint8Array;
    try {
      decoded = decodeZeroElided(encoded, rawLength);
    } catch (error) {
      const status = error instanceof DescriptorCodecError ? error.status : undefined;
      if (status !== undefined) check(status === reference, `kernel status ${status}, reference ${String(reference)}`);
      throw error;
    }
    same(decoded, reference, "the kernel's decoding (against the reference's)");
    return "accepted";
  },
  expected: (error) => error instanceof DescriptorCodecError,
  roundTrip(rng) {
    const raw = randomRaw(rng);
    same(decodeZeroElided(encodeZeroElided(raw), raw.byteLength), raw, "decode(encode(raw))");
  },
};
