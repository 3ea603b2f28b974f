/**
 * What mcdist frames carry, above frame.ts: the REQUEST and RATE messages, and the page object
 * (page contents + a 16-byte GMAC tag). A frame's CRC only catches corruption; anyone on the
 * segment can forge a frame with a valid CRC, so a page is installed only if its tag, keyed by the
 * family's secret, verifies. Requests and rate reports are tagged too (control.ts), and every field
 * is checked before use.
 */
import { createCipheriv } from "node:crypto";
import { PAGE_SIZE } from "../guest-memory/layout.ts";

export const TAG_SIZE = 16;
export const PAGE_OBJECT_SIZE = PAGE_SIZE + TAG_SIZE;
export const FAMILY_KEY_SIZE = 32;
/** Pages one REQUEST may name. */
export const MAX_REQUEST_PAGES = 64;

export const RequestFlag = {
  /** The client asked before and got nothing in time. */
  RETRY: 1,
  /** Send the answer to the requester only (the end game: few clones still need this page). */
  UNICAST: 2,
  /** The numbers are chunks of the family's descriptor, not pages. */
  DESCRIPTOR: 4,
} as const;
const KNOWN_FLAGS = RequestFlag.RETRY | RequestFlag.UNICAST | RequestFlag.DESCRIPTOR;

/** The descriptor travels in chunks of this many bytes (the last one shorter), each its own object. */
export const DESCRIPTOR_CHUNK = 32 * 1024;
export const MAX_CHUNK_OBJECT_SIZE = DESCRIPTOR_CHUNK + TAG_SIZE;
/** The largest descriptor one request can fetch (its chunks fit in one REQUEST). */
export const MAX_MULTICAST_DESCRIPTOR = MAX_REQUEST_PAGES * DESCRIPTOR_CHUNK;

export function descriptorChunks(bytes: number): number {
  return Math.ceil(bytes / DESCRIPTOR_CHUNK);
}

export interface PageRequest {
  flags: number;
  pages: number[];
  /**
   * The group sequence number (frame.ts) from which on the requester heard the group's objects whole
   * (group-sequence.ts), undefined if it heard nothing yet: a send numbered before it, however
   * recent, went out before the requester listened (a clone whose order came after a sibling's asks
   * for what the sibling just got).
   */
  heardFrom?: number;
}

/** Group sequence numbers are 31 bits (frame.ts GROUP_SEQUENCE_MASK; frame.ts imports this file). */
const GROUP_SEQUENCES = 0x80000000;
/** heardFrom on the wire when the requester heard nothing yet. */
const NOTHING_HEARD = 0xffffffff;

/** Why a payload was refused: the reason is a short word for counters and logs. */
export class MessageError extends Error {
  override name = "MessageError";
}

export function checkFamilyKey(key: Uint8Array): void {
  if (key.byteLength !== FAMILY_KEY_SIZE) throw new RangeError(`the family key has ${key.byteLength} bytes, not ${FAMILY_KEY_SIZE}`);
}

/** HMAC-SHA256(key, header ‖ data), first TAG_SIZE bytes: every tag of the family. */
export function familyTag(key: Uint8Array, header: DataView, data: Uint8Array): Uint8Array {
  const hmac = new Bun.CryptoHasher("sha256", key);
  hmac.update(new Uint8Array(header.buffer, header.byteOffset, header.byteLength));
  hmac.update(data);
  return (hmac.digest() as Uint8Array).subarray(0, TAG_SIZE);
}

/**
 * The AES-256 key of a family's object tags: HMAC-SHA256(key, "K..."), a key per use (control
 * tags, HMACs under the family key itself, begin with "C").
 */
const objectKeys = new WeakMap<Uint8Array, Buffer>();
function objectKey(key: Uint8Array): Buffer {
  let derived = objectKeys.get(key);
  if (!derived) {
    derived = Buffer.from(new Bun.CryptoHasher("sha256", key).update("Kmcdist object tags").digest() as Uint8Array);
    objectKeys.set(key, derived);
  }
  return derived;
}

/**
 * GMAC (AES-256-GCM over `data` as additional data, nothing encrypted) with the nonce
 * kind u8 ‖ family u24 ‖ index u64: a round's key is fresh and its image frozen, so each nonce
 * tags one message only (GCM's one rule). A quarter of HMAC-SHA256's cost on a page.
 */
function objectTag(key: Uint8Array, kind: number, family: number, index: number, data: Uint8Array): Uint8Array {
  const nonce = Buffer.alloc(12);
  nonce.writeUInt32BE(((kind << 24) | (family & 0xffffff)) >>> 0, 0);
  nonce.writeBigUInt64BE(BigInt(index), 4);
  const gmac = createCipheriv("aes-256-gcm", objectKey(key), nonce);
  gmac.setAAD(data);
  gmac.final();
  return gmac.getAuthTag();
}

/** The page's tag: objectTag of kind "P". */
export function pageTag(key: Uint8Array, family: number, page: number, data: Uint8Array): Uint8Array {
  return objectTag(key, 0x50, family, page, data);
}

/** A descriptor chunk's tag: objectTag of kind "D", never a page's nonce. */
export function chunkTag(key: Uint8Array, family: number, chunk: number, data: Uint8Array): Uint8Array {
  return objectTag(key, 0x44, family, chunk, data);
}

/** The object a DESCRIPTOR frame sequence carries: the chunk, then its tag. */
export function encodeChunkObject(key: Uint8Array, family: number, chunk: number, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(data.byteLength + TAG_SIZE);
  out.set(data);
  out.set(chunkTag(key, family, chunk, data), data.byteLength);
  return out;
}

/** The chunk's bytes if its tag verifies; undefined if forged or malformed. */
export function verifyChunkObject(key: Uint8Array, family: number, chunk: number, object: Uint8Array): Uint8Array | undefined {
  if (object.byteLength <= TAG_SIZE || object.byteLength > MAX_CHUNK_OBJECT_SIZE) return undefined;
  const data = object.subarray(0, object.byteLength - TAG_SIZE);
  return sameTag(chunkTag(key, family, chunk, data), object.subarray(data.byteLength)) ? data : undefined;
}

/** Compares two tags in constant time. */
export function sameTag(expected: Uint8Array, given: Uint8Array): boolean {
  let difference = 0;
  for (let i = 0; i < TAG_SIZE; i++) difference |= expected[i]! ^ given[i]!;
  return difference === 0;
}

/** The object a PAGE frame sequence carries: the page, then its tag. */
export function encodePageObject(key: Uint8Array, family: number, page: number, data: Uint8Array): Uint8Array {
  if (data.byteLength !== PAGE_SIZE) throw new RangeError(`a page has ${PAGE_SIZE} bytes, not ${data.byteLength}`);
  const out = new Uint8Array(PAGE_OBJECT_SIZE);
  out.set(data);
  out.set(pageTag(key, family, page, data), PAGE_SIZE);
  return out;
}

/** The page's contents if the object is whole and its tag verifies; undefined if forged or malformed. */
export function verifyPageObject(key: Uint8Array, family: number, page: number, object: Uint8Array): Uint8Array | undefined {
  if (object.byteLength !== PAGE_OBJECT_SIZE) return undefined;
  const data = object.subarray(0, PAGE_SIZE);
  return sameTag(pageTag(key, family, page, data), object.subarray(PAGE_SIZE)) ? data : undefined;
}

const REQUEST_HEADER = 6;

/** REQUEST message: flags u8, count u8, heardFrom u32, then `count` page numbers (u32; all network order). */
export function encodeRequest(request: PageRequest): Uint8Array {
  const { flags, pages } = request;
  if (pages.length === 0 || pages.length > MAX_REQUEST_PAGES)
    throw new RangeError(`a request names 1 to ${MAX_REQUEST_PAGES} pages, not ${pages.length}`);
  const out = new Uint8Array(REQUEST_HEADER + 4 * pages.length);
  const view = new DataView(out.buffer);
  view.setUint8(0, flags);
  view.setUint8(1, pages.length);
  const { heardFrom } = request;
  if (heardFrom !== undefined && !(Number.isInteger(heardFrom) && heardFrom >= 0 && heardFrom < GROUP_SEQUENCES))
    throw new RangeError(`heardFrom must be a group sequence number, not ${heardFrom}`);
  view.setUint32(2, heardFrom ?? NOTHING_HEARD);
  pages.forEach((page, i) => view.setUint32(REQUEST_HEADER + 4 * i, page));
  return out;
}

/** Decodes and validates a REQUEST payload against an image of `pageCount` pages and a descriptor of `chunkCount` chunks. */
export function decodeRequest(payload: Uint8Array, pageCount: number, chunkCount = 0): PageRequest {
  if (payload.byteLength < REQUEST_HEADER) throw new MessageError("short");
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const flags = view.getUint8(0);
  const count = view.getUint8(1);
  if ((flags & ~KNOWN_FLAGS) !== 0) throw new MessageError("flags");
  if (count === 0 || count > MAX_REQUEST_PAGES) throw new MessageError("count");
  if (payload.byteLength !== REQUEST_HEADER + 4 * count) throw new MessageError("length");
  const heardFrom = view.getUint32(2);
  if (heardFrom >= GROUP_SEQUENCES && heardFrom !== NOTHING_HEARD) throw new MessageError("heard");
  const limit = (flags & RequestFlag.DESCRIPTOR) !== 0 ? chunkCount : pageCount;
  const pages: number[] = [];
  for (let i = 0; i < count; i++) {
    const page = view.getUint32(REQUEST_HEADER + 4 * i);
    if (page >= limit) throw new MessageError("range");
    pages.push(page);
  }
  return heardFrom === NOTHING_HEARD ? { flags, pages } : { flags, pages, heardFrom };
}

/**
 * The slowest pace a rate report can set (pages/s, 1 MB/s): a receiver slower than this loses
 * frames and retries rather than holding back its whole family. (A link that loses frames at a
 * higher pace makes its receivers report less: loss-rate.ts.)
 */
export const MIN_PACED_RATE = 250;

/** RATE message: the pages per second a receiver keeps up with (u32). */
export function encodeRate(pagesPerSecond: number): Uint8Array {
  if (!Number.isInteger(pagesPerSecond) || pagesPerSecond < 1 || pagesPerSecond > 0xffffffff)
    throw new RangeError(`bad rate ${pagesPerSecond} pages/s`);
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, pagesPerSecond);
  return out;
}

export function decodeRate(payload: Uint8Array): number {
  if (payload.byteLength !== 4) throw new MessageError("length");
  const rate = new DataView(payload.buffer, payload.byteOffset, 4).getUint32(0);
  if (rate === 0) throw new MessageError("rate");
  return rate;
}
