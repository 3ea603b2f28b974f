/**
 * mcdist decoders: frames off the wire (decodeFrame), the payloads they carry (REQUEST, RATE, page
 * and descriptor-chunk objects; tagged control frames as the server opens them), and fragment
 * reassembly fed with decoded frames, where the WASM kernel must agree with the TypeScript reference on every object and counter.
 */
import { decodeFrame, encodeFrame, type Frame, FRAME_HEADER_SIZE, FrameType, fragment, MAX_FRAGMENTS } from "../../../src/mcdist/frame.ts";
import {
  decodeRate,
  decodeRequest,
  encodeChunkObject,
  encodePageObject,
  encodeRate,
  encodeRequest,
  MAX_REQUEST_PAGES,
  MessageError,
  verifyChunkObject,
  verifyPageObject,
} from "../../../src/mcdist/messages.ts";
import { openControl, sealControl } from "../../../src/mcdist/control.ts";
import { Reassembly } from "../../../src/mcdist/reassembly.ts";
import { PAGE_SIZE } from "../../../src/guest-memory/layout.ts";
import { WasmReassembly } from "../../../src/wasm/reassembly.ts";
import type { Rng } from "../../support/rng.ts";
import { check, type FuzzTarget, same, type Verdict } from "../engine.ts";

const FAMILY = 0x5eed0001;
const KEY = new Uint8Array(32).map((_, i) => i * 7 + 1);
const PAGES = 4096;
const CHUNKS = 8;

function randomFrame(rng: Rng): Frame {
  const fragments = rng.int(1, 4);
  return {
    type: rng.int(1, FrameType.PAGES) as FrameType,
    family: FAMILY,
    sequence: rng.int(0, 0xffffffff),
    object: BigInt(rng.int(0, PAGES)),
    fragment: rng.int(0, fragments - 1),
    fragments,
    payload: rng.bytes(rng.int(0, 1400)),
  };
}

/** The frame's CRC made right again after a header change, so mutations reach the later checks. */
function resealFrame(bytes: Uint8Array): Uint8Array {
  if (bytes.byteLength < FRAME_HEADER_SIZE) return bytes;
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const length = Math.min(v.getUint16(24), bytes.byteLength - FRAME_HEADER_SIZE);
  const body = bytes.slice(0, FRAME_HEADER_SIZE + length);
  new DataView(body.buffer).setUint32(28, 0);
  v.setUint32(28, Bun.hash.crc32(body));
  return bytes;
}

/** Header fields of a frame set to edge values: type, family, fragment index and count, payload length. */
function mutateFrameHeader(frame: Uint8Array, rng: Rng): Uint8Array {
  const out = frame.slice();
  if (out.byteLength < FRAME_HEADER_SIZE) return out;
  const v = new DataView(out.buffer);
  switch (rng.int(0, 5)) {
    case 0:
      v.setUint8(3, rng.pick([0, 1, 2, 3, 4, 5, 6, 255]));
      break;
    case 1:
      v.setUint32(4, rng.pick([FAMILY, FAMILY + 1, 0]));
      break;
    case 2:
      v.setUint16(20, rng.pick([0, 1, 63, 64, 65, 0xffff]));
      break;
    case 3:
      v.setUint16(22, rng.pick([0, 1, 2, 64, 65, 0xffff]));
      break;
    case 4:
      v.setUint16(24, rng.pick([0, 1, out.byteLength - FRAME_HEADER_SIZE + rng.int(-2, 2), 0xffff]));
      break;
    default:
      v.setBigUint64(12, rng.pick([0n, 0xffffffffffffffffn, BigInt(PAGES), 1n << 53n]));
  }
  return rng.bool(0.9) ? resealFrame(out) : out;
}

function checkFrame(frame: Frame, bytes: Uint8Array): void {
  const ok =
    frame.fragment < frame.fragments &&
    frame.fragments <= MAX_FRAGMENTS &&
    frame.family === FAMILY &&
    frame.payload.byteLength === new DataView(bytes.buffer, bytes.byteOffset).getUint16(24) &&
    frame.type >= 1 &&
    frame.type <= FrameType.PAGES;
  check(ok, `decodeFrame passed fragment ${frame.fragment}/${frame.fragments} of type ${frame.type}, ${frame.payload.byteLength} bytes`);
}

export const frameTarget: FuzzTarget = {
  name: "mcdist-frame",
  seeds: (rng) => Array.from({ length: 8 }, () => encodeFrame(randomFrame(rng))),
  mutate: (frame, rng) => mutateFrameHeader(frame, rng),
  run(bytes) {
    const result = decodeFrame(bytes, FAMILY);
    if ("dropped" in result) return "refused";
    checkFrame(result.frame, bytes);
    return "accepted";
  },
  expected: () => false,
  roundTrip(rng) {
    const frame = randomFrame(rng);
    const back = decodeFrame(encodeFrame(frame), FAMILY);
    if (!("frame" in back) || !Bun.deepEquals(back.frame, frame)) throw new Error("decodeFrame(encodeFrame(f)) differs from f");
  },
};

/** Message inputs: a selector byte (which payload decoder), then the payload (CONTROL: a whole frame). */
const MessageKind = { REQUEST: 0, RATE: 1, PAGE: 2, CHUNK: 3, CONTROL: 4 } as const;

/** A REQUEST or RATE frame as a client sends it: the message sealed with the family key (control.ts). */
function controlFrame(rng: Rng, type: FrameType, message: Uint8Array): Uint8Array {
  const header = { type, family: FAMILY, sequence: rng.int(0, 0xffffffff), object: 0n };
  return encodeFrame({ ...header, fragment: 0, fragments: 1, payload: sealControl(KEY, header, BigInt(rng.int(0, 0xffffffff)), message) });
}

/** A control frame as the server reads it: decoded, its tag checked, then its message. */
function openControlFrame(bytes: Uint8Array): Verdict {
  const decoded = decodeFrame(bytes, FAMILY);
  if ("dropped" in decoded) return "refused";
  const opened = openControl(KEY, decoded.frame);
  if (opened === undefined) return "refused";
  if (decoded.frame.type === FrameType.REQUEST) decodeRequest(opened.message, PAGES, CHUNKS);
  else if (decoded.frame.type === FrameType.RATE) decodeRate(opened.message);
  return "accepted";
}
const OBJECT_NUMBER = 7;

function randomRequest(rng: Rng) {
  const flags = rng.int(0, 7);
  const limit = (flags & 4) !== 0 ? CHUNKS : PAGES;
  return {
    flags,
    pages: Array.from({ length: rng.int(1, MAX_REQUEST_PAGES) }, () => rng.int(0, limit - 1)),
    ...(rng.int(0, 1) === 1 && { heardFrom: rng.int(0, 0x7fffffff) }),
  };
}

function tagged(kind: number, payload: Uint8Array): Uint8Array {
  return new Uint8Array(Buffer.concat([Uint8Array.of(kind), payload]));
}

export const messagesTarget: FuzzTarget = {
  name: "mcdist-messages",
  seeds: (rng) => [
    tagged(MessageKind.REQUEST, encodeRequest(randomRequest(rng))),
    tagged(MessageKind.REQUEST, encodeRequest({ flags: 4, pages: [0, CHUNKS - 1] })),
    tagged(MessageKind.RATE, encodeRate(rng.int(1, 100_000))),
    tagged(MessageKind.PAGE, encodePageObject(KEY, FAMILY, OBJECT_NUMBER, rng.bytes(PAGE_SIZE))),
    tagged(MessageKind.CHUNK, encodeChunkObject(KEY, FAMILY, OBJECT_NUMBER, rng.bytes(rng.int(1, 3000)))),
    tagged(MessageKind.CONTROL, controlFrame(rng, FrameType.REQUEST, encodeRequest(randomRequest(rng)))),
    tagged(MessageKind.CONTROL, controlFrame(rng, FrameType.RATE, encodeRate(rng.int(1, 100_000)))),
  ],
  run(input) {
    const payload = input.subarray(1);
    switch (input[0]) {
      case MessageKind.REQUEST: {
        const request = decodeRequest(payload, PAGES, CHUNKS);
        const limit = (request.flags & 4) !== 0 ? CHUNKS : PAGES;
        if (request.pages.length === 0 || request.pages.length > MAX_REQUEST_PAGES || request.pages.some((p) => !(p >= 0 && p < limit))) {
          throw new Error(`decodeRequest returned pages outside the image: ${request.pages.length} pages`);
        }
        return "accepted";
      }
      case MessageKind.RATE:
        return decodeRate(payload) >= 1 ? "accepted" : "refused";
      case MessageKind.PAGE:
        return verdictOf(verifyPageObject(KEY, FAMILY, OBJECT_NUMBER, payload), PAGE_SIZE);
      case MessageKind.CHUNK:
        return verdictOf(verifyChunkObject(KEY, FAMILY, OBJECT_NUMBER, payload));
      case MessageKind.CONTROL:
        return openControlFrame(payload);
      default:
        return "refused";
    }
  },
  expected: (error) => error instanceof MessageError,
  roundTrip(rng) {
    const request = randomRequest(rng);
    same(decodeRequest(encodeRequest(request), PAGES, CHUNKS), request, "decodeRequest(encodeRequest(r))");
    const rate = rng.int(1, 0xffffffff);
    if (decodeRate(encodeRate(rate)) !== rate) throw new Error(`decodeRate(encodeRate(${rate})) differs`);
    const page = rng.bytes(PAGE_SIZE);
    same(verifyPageObject(KEY, FAMILY, 3, encodePageObject(KEY, FAMILY, 3, page)), page, "verifyPageObject(encodePageObject(p))");
  },
};

function verdictOf(data: Uint8Array | undefined, size?: number): Verdict {
  if (data === undefined) return "refused";
  if (size !== undefined && data.byteLength !== size) throw new Error(`verified object of ${data.byteLength} bytes, not ${size}`);
  return "accepted";
}

/** Reassembly inputs: frames as they arrive, each a u16 length then the frame's bytes. */
function framesInput(frames: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(frames.flatMap((f) => [Uint8Array.of(f.byteLength >> 8, f.byteLength & 0xff), f])));
}

function splitFrames(input: Uint8Array): Uint8Array[] {
  const frames: Uint8Array[] = [];
  for (let at = 0; at + 2 <= input.byteLength; ) {
    const length = (input[at]! << 8) | input[at + 1]!;
    frames.push(input.subarray(at + 2, at + 2 + length));
    at += 2 + length;
  }
  return frames;
}

const REASSEMBLY = { maxPartial: 3, maxObjectBytes: 3 * 1500 };

export const reassemblyTarget: FuzzTarget = {
  name: "mcdist-reassembly",
  seeds(rng) {
    return Array.from({ length: 6 }, () => {
      const frames = Array.from({ length: rng.int(1, 4) }, () => {
        const data = rng.bytes(rng.int(1, 4000));
        return fragment(FrameType.PAGE, FAMILY, rng.int(0, 3), BigInt(rng.int(0, 5)), data, rng.pick([576, 1000, 1500])).map(encodeFrame);
      }).flat();
      return framesInput(rng.shuffle(frames));
    });
  },
  mutate(input, rng) {
    const frames = splitFrames(input);
    if (frames.length === 0) return input;
    const i = rng.int(0, frames.length - 1);
    switch (rng.int(0, 3)) {
      case 0:
        frames.splice(rng.int(0, frames.length), 0, frames[i]!);
        break;
      case 1:
        frames.splice(i, 1);
        break;
      case 2:
        rng.shuffle(frames);
        break;
      default:
        frames[i] = mutateFrameHeader(frames[i]!, rng);
    }
    return framesInput(frames);
  },
  run(input) {
    const reference = new Reassembly(REASSEMBLY);
    const kernel = new WasmReassembly(REASSEMBLY);
    let completed = 0;
    for (const bytes of splitFrames(input)) {
      const decoded = decodeFrame(bytes, FAMILY);
      if ("dropped" in decoded) continue;
      const expected = reference.add(decoded.frame);
      const got = kernel.add(decoded.frame);
      same(got, expected, "the WASM reassembly's object (against the reference's)");
      check(
        !expected || expected.byteLength <= REASSEMBLY.maxObjectBytes,
        `an object of ${expected?.byteLength} bytes passed maxObjectBytes`,
      );
      if (reference.pending > REASSEMBLY.maxPartial) throw new Error(`${reference.pending} objects in progress, more than maxPartial`);
      if (expected) completed++;
    }
    if (!Bun.deepEquals({ ...kernel.counters }, { ...reference.counters }) || kernel.pending !== reference.pending) {
      throw new Error(`counters differ: WASM ${JSON.stringify({ ...kernel.counters })}, reference ${JSON.stringify(reference.counters)}`);
    }
    return completed > 0 ? "accepted" : "refused";
  },
  expected: () => false,
};
