import { describe, expect, test } from "bun:test";
import {
  decodeFrame,
  encodeFrame,
  type Frame,
  fragment,
  FrameType,
  FRAME_HEADER_SIZE,
  peekPages,
  writeFrame,
} from "../../src/mcdist/frame.ts";

const page = Uint8Array.from({ length: 4096 }, (_, i) => (i * 7 + 3) & 0xff);

describe("mcdist frames", () => {
  test("a page at MTU 1500 is three frames that decode back to it", () => {
    const frames = fragment(FrameType.PAGE, 42, 7, 1234n, page, 1500);
    expect(frames.map((f) => f.payload.byteLength)).toEqual([1468, 1468, 1160]);
    const encoded = frames.map((f) => encodeFrame(f));
    const decoded = encoded.map((bytes) => decodeFrame(bytes, 42));
    expect(encoded).toEqual(frames.map((f) => encodeFrame(f))); // decoding leaves the frame as it was
    const parts = decoded.map((d) => ("frame" in d ? d.frame : undefined));
    expect(parts.every((p) => p?.object === 1234n && p.fragments === 3 && p.sequence === 7)).toBe(true);
    const joined = new Uint8Array(4096);
    let at = 0;
    for (const p of parts) {
      joined.set(p!.payload, at);
      at += p!.payload.byteLength;
    }
    expect(joined).toEqual(page);
  });

  test("a frame written from parts into a reused buffer is the frame encoded from their concatenation", () => {
    const tag = new Uint8Array(16).fill(0xab);
    const header = { type: FrameType.PAGE, family: 9, sequence: 3, object: 77n, fragment: 0, fragments: 1 };
    const buffer = new Uint8Array(9000).fill(0xff); // what the last frame left behind must not leak into this one
    const written = writeFrame(buffer, header, [page, tag]);
    const whole = new Uint8Array(4112);
    whole.set(page);
    whole.set(tag, 4096);
    expect(written).toEqual(encodeFrame({ ...header, payload: whole }));
    const decoded = decodeFrame(written, 9);
    expect("frame" in decoded && decoded.frame.payload).toEqual(whole);
    expect(() => writeFrame(new Uint8Array(FRAME_HEADER_SIZE + 4111), header, [page, tag])).toThrow(RangeError);
  });

  test("Ethernet padding after the payload is ignored", () => {
    const small: Frame = {
      type: FrameType.REQUEST,
      family: 1,
      sequence: 1,
      object: 5n,
      fragment: 0,
      fragments: 1,
      payload: new Uint8Array([1, 2]),
    };
    const padded = new Uint8Array(64);
    padded.set(encodeFrame(small));
    expect(decodeFrame(padded, 1)).toMatchObject({ frame: { object: 5n, payload: new Uint8Array([1, 2]) } });
  });

  test("frames of another family, malformed or forged frames are dropped", () => {
    const good = encodeFrame(fragment(FrameType.PAGE, 42, 1, 9n, page, 1500)[0]!);
    expect(decodeFrame(good, 43)).toEqual({ dropped: "family" });
    expect(decodeFrame(good.subarray(0, 20), 42)).toEqual({ dropped: "short" });
    expect(decodeFrame(good.subarray(0, FRAME_HEADER_SIZE + 100), 42)).toEqual({ dropped: "length" });
    for (const [at, reason] of [
      [0, "magic"],
      [2, "version"],
      [3, "type"],
      [40, "checksum"],
      [14, "checksum"],
      [29, "checksum"],
    ] as const) {
      const bad = good.slice();
      bad[at]! ^= 0x5a;
      const received = bad.slice();
      expect(decodeFrame(bad, 42)).toEqual({ dropped: reason });
      expect(bad).toEqual(received); // the CRC is checked in place and put back
    }
    // A forged frame with a correct checksum but impossible fragment numbers.
    const forged = encodeFrame({
      type: FrameType.PAGE,
      family: 42,
      sequence: 1,
      object: 1n,
      fragment: 5,
      fragments: 3,
      payload: new Uint8Array(8),
    });
    expect(decodeFrame(forged, 42)).toEqual({ dropped: "fragment" });
    const random = Uint8Array.from({ length: 1500 }, () => Math.floor(Math.random() * 256));
    expect("dropped" in decodeFrame(random, 42)).toBe(true);
  });

  test("a PAGES frame names its first page and how many whole pages it carries; a type past it is dropped", () => {
    const objects = new Uint8Array(2 * 4112).fill(7);
    const header = { type: FrameType.PAGES, family: 9, sequence: 4, object: 300n, fragment: 0, fragments: 1 };
    const bytes = encodeFrame({ ...header, payload: objects });
    expect(decodeFrame(bytes, 9)).toMatchObject({ frame: { type: FrameType.PAGES, object: 300n, payload: objects } });
    expect(peekPages(bytes, 9)).toEqual({ first: 300, count: 2 });
    expect(peekPages(encodeFrame({ ...header, type: FrameType.PAGE, payload: objects.subarray(0, 4112) }), 9)).toEqual({
      first: 300,
      count: 1,
    });
    expect(peekPages(bytes, 10)).toBeUndefined();
    expect(peekPages(encodeFrame({ ...header, type: FrameType.REQUEST, payload: new Uint8Array(4) }), 9)).toBeUndefined();
    expect(decodeFrame(encodeFrame({ ...header, type: (FrameType.PAGES + 1) as FrameType, payload: objects }), 9)).toEqual({
      dropped: "type",
    });
  });

  test("an object too big for the fragment limit is refused when sending", () => {
    expect(() => fragment(FrameType.DESCRIPTOR, 1, 1, 0n, new Uint8Array(200_000), 1500)).toThrow("at most 64");
  });
});
