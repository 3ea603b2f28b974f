// Property tests: the descriptor codec WebAssembly kernel (src/wasm/descriptor-codec.ts) against
// its plain TypeScript reference (test/support/descriptor-codec-reference.ts): the same encoded
// bytes for every input, the same answer (bytes or refusal) for every corrupted or forged stream.
// Set CODEC_SEED=<n> to rerun with other inputs.
import { describe, expect, test } from "bun:test";
import { decodeZeroElided, DescriptorCodecError, encodeZeroElided } from "../../src/wasm/descriptor-codec.ts";
import { referenceDecode, referenceEncode } from "../support/descriptor-codec-reference.ts";
import { Rng } from "../support/rng.ts";

const SEED = Number(process.env.CODEC_SEED ?? 20261201);
const PAGE = 4096;

/** Inputs shaped like descriptor payloads: zero pages, runs, bitmaps, repeats and noise. */
function randomPayload(rng: Rng): Uint8Array {
  const length = rng.pick([0, 1, 3, 4, 5, 15, 16, 4095, 4096, 4097, 8191, 12288, rng.int(0, 70_000), rng.int(0, 300_000)]);
  const out = new Uint8Array(length);
  let at = 0;
  while (at < length) {
    const span = Math.min(length - at, rng.pick([1, 7, 64, 300, PAGE, PAGE * 3, rng.int(1, 20_000)]));
    switch (rng.int(0, 5)) {
      case 0: // zeros (whole pages are elided)
        break;
      case 1:
        out.fill(rng.pick([0xff, 0x01, rng.int(0, 255)]), at, at + span);
        break;
      case 2: // noise
        out.set(rng.bytes(span), at);
        break;
      case 3: // a copy of something earlier, near or far (offsets past 65535 must not match)
        if (at > 0) {
          const from = rng.int(0, at - 1);
          for (let k = 0; k < span; k++) out[at + k] = out[from + (k % (at - from))]!;
        }
        break;
      case 4: // a sparse bitmap
        for (let k = 0; k < span; k++) if (rng.bool(0.05)) out[at + k] = 1 << rng.int(0, 7);
        break;
      default: {
        // a short repeating pattern
        const pattern = rng.bytes(rng.int(1, 12));
        for (let k = 0; k < span; k++) out[at + k] = pattern[k % pattern.length]!;
      }
    }
    at += span;
  }
  return out;
}

function wasmDecode(encoded: Uint8Array, n: number): Uint8Array | number {
  try {
    return decodeZeroElided(encoded, n);
  } catch (error) {
    if (error instanceof DescriptorCodecError) return error.status;
    throw error;
  }
}

describe("descriptor codec: WASM kernel vs TypeScript reference", () => {
  test("the same encoded bytes for random payloads, and both decode them back", () => {
    const rng = new Rng(SEED);
    for (let round = 0; round < 300; round++) {
      const raw = randomPayload(rng);
      const encoded = encodeZeroElided(raw);
      const reference = referenceEncode(raw);
      expect(encoded).toEqual(reference);
      expect(decodeZeroElided(encoded, raw.length)).toEqual(raw);
      expect(referenceDecode(encoded, raw.length)).toEqual(raw);
    }
  });

  test("all-zero pages cost one bit each, and long runs a byte per 255", () => {
    const raw = new Uint8Array(1 << 20); // 256 pages
    raw.fill(0xff, 40 * PAGE, 72 * PAGE);
    const encoded = encodeZeroElided(raw);
    expect(encoded.length).toBeLessThan(4 + 32 + (32 * PAGE) / 255 + 16);
    expect(decodeZeroElided(encoded, raw.length)).toEqual(raw);
  });

  test("corrupted, cut and forged streams get the same answer from both, never a crash", () => {
    const rng = new Rng(SEED + 1);
    let refused = 0;
    for (let round = 0; round < 400; round++) {
      const raw = randomPayload(rng);
      const encoded = encodeZeroElided(raw).slice();
      let forged: Uint8Array;
      switch (rng.int(0, 3)) {
        case 0: // flipped bytes
          forged = encoded.slice();
          for (let k = 0; k < rng.int(1, 4); k++) if (forged.length > 0) forged[rng.int(0, forged.length - 1)]! ^= 1 << rng.int(0, 7);
          break;
        case 1: // cut short
          forged = encoded.subarray(0, rng.int(0, Math.max(0, encoded.length - 1)));
          break;
        case 2: // trailing bytes
          forged = new Uint8Array([...encoded, ...rng.bytes(rng.int(1, 8))]);
          break;
        default: // noise after a valid header
          forged = new Uint8Array([
            ...encoded.subarray(0, Math.min(encoded.length, 4 + Math.ceil(raw.length / PAGE / 8))),
            ...rng.bytes(rng.int(0, 200)),
          ]);
      }
      const fromWasm = wasmDecode(forged, raw.length);
      expect(fromWasm).toEqual(referenceDecode(forged, raw.length));
      if (typeof fromWasm === "number") refused++;
    }
    expect(refused).toBeGreaterThan(100);
  });

  test("each refusal says why", () => {
    const raw = new Uint8Array(5000).fill(7);
    const good = encodeZeroElided(raw);
    const reason = (bytes: Uint8Array, n = raw.length): string => {
      try {
        decodeZeroElided(bytes, n);
      } catch (error) {
        expect(error).toBeInstanceOf(DescriptorCodecError);
        return (error as Error).message;
      }
      throw new Error("accepted");
    };
    expect(reason(good, raw.length + 1)).toContain("disagrees with the header");
    expect(reason(good.subarray(0, 3))).toContain("cut off");
    // Literal-only stream of one byte, then a match at offset 2 (before the start).
    const header = good.subarray(0, 5);
    expect(reason(new Uint8Array([...header, 0x10, 9, 2, 0]))).toContain("before the start");
    expect(reason(new Uint8Array([...header, 0x10, 9]))).toContain("fewer bytes");
    expect(
      reason(
        new Uint8Array([
          ...header,
          0x1f,
          9,
          1,
          0,
          255,
          255,
          255,
          255,
          255,
          255,
          255,
          255,
          255,
          255,
          255,
          255,
          255,
          255,
          255,
          255,
          255,
          255,
          255,
          255,
          255,
          0,
        ]),
      ),
    ).toContain("more bytes");
  });
});
