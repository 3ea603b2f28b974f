/**
 * The memory server's wire format, shared by the server and memtap's client. Every message is a
 * 24-byte header and a payload:
 *
 *   magic u32 "SFPG" | version u16 | type u16 | length u32 (payload bytes) | sequence u32 |
 *   checksum u32 (CRC-32 of header bytes 0..16 and the payload) | reserved u32 (0)
 *
 * Little-endian. The client opens with Hello (the version it speaks, and the server's token when
 * the server listens on TCP); the server answers
 * HelloReply (the version, page size and page count of its image) or Error. Then each PageRequest
 * (page numbers) gets one PageData (the same pages, in order) or Error, with the same sequence.
 * Decoders reject a wrong magic, version, type, length, sequence or checksum: a corrupt message
 * must never reach guest memory.
 */
import { SnowflockError } from "../errors.ts";
import { PAGE_SIZE } from "../guest-memory/layout.ts";

export const MAGIC = 0x47504653; // "SFPG" read as a little-endian u32
export const PROTOCOL_VERSION = 1;
export const HEADER_SIZE = 24;
/** Pages one request may ask for: bounds a response to about 256 KiB. */
export const MAX_PAGES_PER_REQUEST = 64;
const PAGE_ENTRY = 4 + PAGE_SIZE;
const MAX_ERROR_TEXT = 1024;
/** A server reachable over the network admits only clients that know its random token. */
export const TOKEN_BYTES = 32;

/** Message types; 0 is never sent, so a zeroed header is not a valid message. */
export enum MessageType {
  Invalid = 0,
  Hello = 1,
  HelloReply = 2,
  PageRequest = 3,
  PageData = 4,
  Error = 5,
}

export enum ErrorKind {
  Invalid = 0,
  BadMessage = 1,
  UnsupportedVersion = 2,
  OutOfRange = 3,
  Internal = 4,
}

/** Largest payload each type may carry; anything longer is refused before it is read. */
const MAX_PAYLOAD: Record<MessageType, number> = {
  [MessageType.Invalid]: 0,
  [MessageType.Hello]: 4 + TOKEN_BYTES,
  [MessageType.HelloReply]: 16,
  [MessageType.PageRequest]: 4 + 4 * MAX_PAGES_PER_REQUEST,
  [MessageType.PageData]: 4 + PAGE_ENTRY * MAX_PAGES_PER_REQUEST,
  [MessageType.Error]: 4 + MAX_ERROR_TEXT,
};

export const MAX_MESSAGE_SIZE = HEADER_SIZE + MAX_PAYLOAD[MessageType.PageData];
/** The first message a client sends (Hello, with a token): all a server buffers before a client proves itself. */
export const MAX_HELLO_SIZE = HEADER_SIZE + MAX_PAYLOAD[MessageType.Hello];
/** The largest message a client sends at all (a PageRequest). */
export const MAX_CLIENT_MESSAGE_SIZE = HEADER_SIZE + Math.max(MAX_PAYLOAD[MessageType.Hello], MAX_PAYLOAD[MessageType.PageRequest]);

export class ProtocolError extends SnowflockError {
  override name = "ProtocolError";
  /** What is wrong, without the "bad message" preamble (for callers that name the sender). */
  constructor(readonly detail: string) {
    super("MEMORY", `bad page-protocol message: ${detail}`);
  }
}

export interface Header {
  type: MessageType;
  length: number;
  sequence: number;
  checksum: number;
}

function checksum(header: Uint8Array, payload: Uint8Array): number {
  return Bun.hash.crc32(payload, Bun.hash.crc32(header.subarray(0, 16)));
}

/** A whole message: header (with its checksum) and payload. */
export function encodeMessage(type: MessageType, sequence: number, payload: Uint8Array): Uint8Array {
  const message = new Uint8Array(HEADER_SIZE + payload.byteLength);
  const view = new DataView(message.buffer);
  view.setUint32(0, MAGIC, true);
  view.setUint16(4, PROTOCOL_VERSION, true);
  view.setUint16(6, type, true);
  view.setUint32(8, payload.byteLength, true);
  view.setUint32(12, sequence >>> 0, true);
  message.set(payload, HEADER_SIZE);
  view.setUint32(16, checksum(message, payload), true);
  return message;
}

/** Checks everything the header alone can tell; the payload's length is then known and bounded. */
export function decodeHeader(bytes: Uint8Array): Header {
  if (bytes.byteLength < HEADER_SIZE) throw new ProtocolError(`header of ${bytes.byteLength} bytes`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, HEADER_SIZE);
  const magic = view.getUint32(0, true);
  if (magic !== MAGIC) throw new ProtocolError(`wrong magic 0x${magic.toString(16)}`);
  const version = view.getUint16(4, true);
  if (version !== PROTOCOL_VERSION) throw new ProtocolError(`protocol version ${version}, this side speaks ${PROTOCOL_VERSION}`);
  const type = view.getUint16(6, true);
  if (type === MessageType.Invalid || !(type in MAX_PAYLOAD)) throw new ProtocolError(`unknown message type ${type}`);
  const length = view.getUint32(8, true);
  if (length > MAX_PAYLOAD[type as MessageType])
    throw new ProtocolError(`${MessageType[type]} payload of ${length} bytes is over ${MAX_PAYLOAD[type as MessageType]}`);
  if (view.getUint32(20, true) !== 0) throw new ProtocolError("reserved header field is not zero");
  return { type, length, sequence: view.getUint32(12, true), checksum: view.getUint32(16, true) };
}

export function verifyChecksum(headerBytes: Uint8Array, header: Header, payload: Uint8Array): void {
  if (payload.byteLength !== header.length) throw new ProtocolError(`payload of ${payload.byteLength} bytes, header says ${header.length}`);
  const actual = checksum(headerBytes, payload);
  if (actual !== header.checksum)
    throw new ProtocolError(
      `checksum mismatch in ${MessageType[header.type]} #${header.sequence} (0x${actual.toString(16)} != ` +
        `0x${header.checksum.toString(16)})`,
    );
}

// ---- payloads ----

function u32s(...values: number[]): Uint8Array {
  const out = new Uint8Array(values.length * 4);
  const view = new DataView(out.buffer);
  values.forEach((v, i) => view.setUint32(i * 4, v, true));
  return out;
}

function reader(payload: Uint8Array, what: string, exact?: number) {
  if (exact !== undefined && payload.byteLength !== exact)
    throw new ProtocolError(`${what} payload of ${payload.byteLength} bytes, expected ${exact}`);
  return new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
}

/** Hello: the version the client speaks and, for a server that requires one, its token. */
export function encodeHello(version = PROTOCOL_VERSION, token?: Uint8Array): Uint8Array {
  if (!token) return u32s(version);
  if (token.byteLength !== TOKEN_BYTES) throw new RangeError(`a memory-server token has ${TOKEN_BYTES} bytes`);
  const out = new Uint8Array(4 + TOKEN_BYTES);
  out.set(u32s(version));
  out.set(token, 4);
  return out;
}

export function decodeHello(payload: Uint8Array): { version: number; token?: Uint8Array } {
  if (payload.byteLength !== 4 && payload.byteLength !== 4 + TOKEN_BYTES)
    throw new ProtocolError(`Hello payload of ${payload.byteLength} bytes, expected 4 or ${4 + TOKEN_BYTES}`);
  const version = reader(payload, "Hello").getUint32(0, true);
  return payload.byteLength === 4 ? { version } : { version, token: payload.slice(4) };
}

export interface ImageInfo {
  version: number;
  pageSize: number;
  pageCount: number;
}

export function encodeHelloReply(info: ImageInfo): Uint8Array {
  const out = new Uint8Array(16);
  const view = new DataView(out.buffer);
  view.setUint32(0, info.version, true);
  view.setUint32(4, info.pageSize, true);
  view.setBigUint64(8, BigInt(info.pageCount), true);
  return out;
}

export function decodeHelloReply(payload: Uint8Array): ImageInfo {
  const view = reader(payload, "HelloReply", 16);
  return { version: view.getUint32(0, true), pageSize: view.getUint32(4, true), pageCount: Number(view.getBigUint64(8, true)) };
}

export function encodePageRequest(pages: readonly number[]): Uint8Array {
  if (pages.length === 0 || pages.length > MAX_PAGES_PER_REQUEST)
    throw new RangeError(`a page request carries 1..${MAX_PAGES_PER_REQUEST} pages, not ${pages.length}`);
  return u32s(pages.length, ...pages);
}

export function decodePageRequest(payload: Uint8Array): number[] {
  const view = reader(payload, "PageRequest");
  const count = payload.byteLength >= 4 ? view.getUint32(0, true) : 0;
  if (count === 0 || count > MAX_PAGES_PER_REQUEST || payload.byteLength !== 4 + 4 * count) {
    throw new ProtocolError(`PageRequest of ${payload.byteLength} bytes claims ${count} pages`);
  }
  return Array.from({ length: count }, (_, i) => view.getUint32(4 + 4 * i, true));
}

/** PageData payload size for `count` pages, so a server can fill one buffer in place. */
export const pageDataSize = (count: number): number => 4 + PAGE_ENTRY * count;

/** Writes the PageData payload for `pages` into `payload`, copying each page from `read(page)`. */
export function encodePageData(
  pages: readonly number[],
  read: (page: number) => Uint8Array,
  payload = new Uint8Array(pageDataSize(pages.length)),
): Uint8Array {
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  view.setUint32(0, pages.length, true);
  pages.forEach((page, i) => {
    const at = 4 + PAGE_ENTRY * i;
    view.setUint32(at, page, true);
    payload.set(read(page), at + 4);
  });
  return payload;
}

/**
 * The pages of a PageData payload, checked against the request: same count, same page numbers in
 * the same order. Returns views into `payload`.
 */
export function decodePageData(payload: Uint8Array, requested: readonly number[]): Uint8Array[] {
  const view = reader(payload, "PageData", pageDataSize(requested.length));
  if (view.getUint32(0, true) !== requested.length)
    throw new ProtocolError(`PageData carries ${view.getUint32(0, true)} pages, ${requested.length} were asked for`);
  return requested.map((page, i) => {
    const at = 4 + PAGE_ENTRY * i;
    const got = view.getUint32(at, true);
    if (got !== page) throw new ProtocolError(`PageData entry ${i} is page ${got}, page ${page} was asked for`);
    return payload.subarray(at + 4, at + 4 + PAGE_SIZE);
  });
}

export function encodeError(kind: ErrorKind, text: string): Uint8Array {
  const message = new TextEncoder().encode(text).subarray(0, MAX_ERROR_TEXT);
  const out = new Uint8Array(4 + message.byteLength);
  new DataView(out.buffer).setUint32(0, kind, true);
  out.set(message, 4);
  return out;
}

export function decodeError(payload: Uint8Array): { kind: ErrorKind; text: string } {
  const view = reader(payload, "Error");
  if (payload.byteLength < 4) throw new ProtocolError("Error payload too short");
  const kind = view.getUint32(0, true);
  return { kind: kind in ErrorKind ? kind : ErrorKind.Invalid, text: new TextDecoder().decode(payload.subarray(4)) };
}
