/**
 * mcdist frames: what travels in one Ethernet frame (after the 14-byte Ethernet header, under
 * snowflock's own EtherType) or one UDP datagram. A page larger than a frame is split into
 * fragments. Every frame names its family, and carries a sequence number and a CRC-32, so a
 * receiver can drop frames of other families, duplicates, and anything malformed or forged.
 * Version 2: REQUEST and RATE payloads carry a sender and a tag (control.ts); a version 1 peer's
 * frames are dropped as "version", and counted as such on both sides. Version 3: PAGES frames
 * (several whole pages in one frame, where the link's MTU fits them). Version 4: a REQUEST names
 * the group send from which on its sender heard the server (messages.ts `heardFrom`). Version 5:
 * page and descriptor chunk tags are GMACs (messages.ts objectTag), no longer HMACs.
 */
import { PAGE_OBJECT_SIZE } from "./messages.ts";

export const ETHERTYPE_MCDIST = 0x88b5; // IEEE 802 "local experimental" EtherType 1
export const FRAME_MAGIC = 0x5346; // "SF"
export const FRAME_VERSION = 5;
export const FRAME_HEADER_SIZE = 32;
export const MAX_FRAGMENTS = 64;
/**
 * A server numbers the objects it sends to the group one after another in the low 31 bits of the
 * sequence, so that a client that misses some sees a gap; a unicast send has the top bit set and a
 * count of its own, as another client's unicast answers never reach this one.
 */
export const GROUP_SEQUENCE_MASK = 0x7fffffff;
export const UNICAST_SEQUENCE = 0x80000000;

export const FrameType = {
  INVALID: 0,
  /** A fragment of a page's contents, multicast to the family. */
  PAGE: 1,
  /** A clone asks for pages. */
  REQUEST: 2,
  /** A fragment of a descriptor. */
  DESCRIPTOR: 3,
  /** A receiver reports the rate it keeps up with (flow control). */
  RATE: 4,
  /**
   * Whole pages one after another (page `object`, then the next, ...), each with its tag, in one
   * unfragmented frame: on a link whose MTU fits two or more, a page costs a fraction of a frame.
   */
  PAGES: 5,
} as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

export interface Frame {
  type: FrameType;
  family: number;
  sequence: number;
  /** Page number (PAGE, REQUEST; PAGES: the first) or object number (DESCRIPTOR). */
  object: bigint;
  fragment: number;
  fragments: number;
  payload: Uint8Array;
}

/** Payload bytes per frame for a link MTU (the Ethernet header is not part of the MTU). */
export function payloadPerFrame(mtu: number): number {
  return mtu - FRAME_HEADER_SIZE;
}

export function encodeFrame(frame: Frame): Uint8Array {
  return writeFrame(new Uint8Array(FRAME_HEADER_SIZE + frame.payload.byteLength), frame, [frame.payload]);
}

/**
 * Writes one frame whose payload is `parts` one after another into the start of `out`, and returns
 * that view of it: a sender reuses one buffer and copies the payload once, not into an object first.
 */
export function writeFrame(out: Uint8Array, header: Omit<Frame, "payload">, parts: Uint8Array[]): Uint8Array {
  let length = 0;
  for (const part of parts) length += part.byteLength;
  if (FRAME_HEADER_SIZE + length > out.byteLength)
    throw new RangeError(`a frame of ${length} payload bytes does not fit ${out.byteLength - FRAME_HEADER_SIZE}`);
  const v = new DataView(out.buffer, out.byteOffset, FRAME_HEADER_SIZE);
  v.setUint16(0, FRAME_MAGIC);
  v.setUint8(2, FRAME_VERSION);
  v.setUint8(3, header.type);
  v.setUint32(4, header.family);
  v.setUint32(8, header.sequence);
  v.setBigUint64(12, header.object);
  v.setUint16(20, header.fragment);
  v.setUint16(22, header.fragments);
  v.setUint16(24, length);
  v.setUint16(26, 0); // reserved
  v.setUint32(28, 0);
  let at = FRAME_HEADER_SIZE;
  for (const part of parts) {
    out.set(part, at);
    at += part.byteLength;
  }
  const frame = out.subarray(0, at);
  v.setUint32(28, Bun.hash.crc32(frame));
  return frame;
}

/** Splits one object (a page, a descriptor) into frames that fit `mtu`. */
export function fragment(type: FrameType, family: number, sequence: number, object: bigint, data: Uint8Array, mtu: number): Frame[] {
  const size = payloadPerFrame(mtu);
  const fragments = Math.max(1, Math.ceil(data.byteLength / size));
  if (fragments > MAX_FRAGMENTS)
    throw new RangeError(`${data.byteLength} bytes need ${fragments} frames at MTU ${mtu}; at most ${MAX_FRAGMENTS}`);
  return Array.from({ length: fragments }, (_, i) => ({
    type,
    family,
    sequence,
    object,
    fragment: i,
    fragments,
    payload: data.subarray(i * size, (i + 1) * size),
  }));
}

/**
 * The pages a PAGE or PAGES frame for `family` names (the first, and how many), read without
 * checking the frame (to drop it cheaply); else undefined.
 */
export function peekPages(bytes: Uint8Array, family: number): { first: number; count: number } | undefined {
  if (bytes.byteLength < FRAME_HEADER_SIZE) return undefined;
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const type = v.getUint8(3);
  if ((type !== FrameType.PAGE && type !== FrameType.PAGES) || v.getUint32(4) !== family) return undefined;
  const first = v.getBigUint64(12);
  if (first > BigInt(Number.MAX_SAFE_INTEGER)) return undefined;
  return { first: Number(first), count: type === FrameType.PAGES ? Math.max(1, Math.floor(v.getUint16(24) / PAGE_OBJECT_SIZE)) : 1 };
}

export type DecodeResult = { frame: Frame } | { dropped: string };

/**
 * Decodes a received frame for `family`; anything else is dropped with the reason. The payload is
 * a view of `bytes` (no copy: a receiver decodes every frame on the segment), valid as long as
 * they are; the CRC field is zeroed in place while it is checked, then put back.
 */
export function decodeFrame(bytes: Uint8Array, family: number): DecodeResult {
  if (bytes.byteLength < FRAME_HEADER_SIZE) return { dropped: "short" };
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (v.getUint16(0) !== FRAME_MAGIC) return { dropped: "magic" };
  if (v.getUint8(2) !== FRAME_VERSION) return { dropped: "version" };
  const type = v.getUint8(3);
  if (type === FrameType.INVALID || type > FrameType.PAGES) return { dropped: "type" };
  const length = v.getUint16(24);
  // Ethernet pads short frames, so the frame may be longer than header + payload, never shorter.
  if (FRAME_HEADER_SIZE + length > bytes.byteLength) return { dropped: "length" };
  const body = bytes.subarray(0, FRAME_HEADER_SIZE + length);
  const crc = v.getUint32(28);
  v.setUint32(28, 0);
  const computed = Bun.hash.crc32(body);
  v.setUint32(28, crc);
  if (computed !== crc) return { dropped: "checksum" };
  if (v.getUint32(4) !== family) return { dropped: "family" };
  const fragments = v.getUint16(22);
  const index = v.getUint16(20);
  if (fragments === 0 || fragments > MAX_FRAGMENTS || index >= fragments) return { dropped: "fragment" };
  return {
    frame: {
      type: type as FrameType,
      family,
      sequence: v.getUint32(8),
      object: v.getBigUint64(12),
      fragment: index,
      fragments,
      payload: body.subarray(FRAME_HEADER_SIZE),
    },
  };
}
