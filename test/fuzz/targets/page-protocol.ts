/**
 * The memory server's page protocol (a message as a server or memtap's client decodes it: header,
 * checksum, then the payload decoder of its type) and memory-server addresses (parsePageServer:
 * what travels in clone orders and clone arguments).
 */
import { SnowflockError } from "../../../src/errors.ts";
import { PAGE_SIZE } from "../../../src/guest-memory/layout.ts";
import {
  decodeError,
  decodeHeader,
  decodeHello,
  decodeHelloReply,
  decodePageData,
  decodePageRequest,
  encodeError,
  encodeHello,
  encodeHelloReply,
  encodeMessage,
  encodePageData,
  encodePageRequest,
  ErrorKind,
  HEADER_SIZE,
  MAX_PAGES_PER_REQUEST,
  MessageType,
  PROTOCOL_VERSION,
  TOKEN_BYTES,
  verifyChecksum,
} from "../../../src/memory/page-protocol.ts";
import { parsePageServer } from "../../../src/memory/page-server-address.ts";
import type { Rng } from "../../support/rng.ts";
import { check, type FuzzTarget, same } from "../engine.ts";
import { mutateJson, parseJson, stringify } from "../json.ts";
import { mutateBytes } from "../mutate.ts";
import { ADDRESSES } from "./agent.ts";

const isSnowflockError = (error: unknown) => error instanceof SnowflockError;
const PAGE_ENTRY = 4 + PAGE_SIZE;

const randomPages = (rng: Rng) => Array.from({ length: rng.int(1, MAX_PAGES_PER_REQUEST) }, () => rng.int(0, 0xffffffff));

function pageData(rng: Rng, pages: number[]): Uint8Array {
  const contents = rng.bytes(PAGE_SIZE);
  return encodePageData(pages, () => contents);
}

/** The header checksum made right again after a change, so mutations reach the payload decoders. */
function resealMessage(message: Uint8Array): Uint8Array {
  if (message.byteLength < HEADER_SIZE) return message;
  const crc = Bun.hash.crc32(message.subarray(HEADER_SIZE), Bun.hash.crc32(message.subarray(0, 16)));
  new DataView(message.buffer, message.byteOffset).setUint32(16, crc, true);
  return message;
}

/** The page numbers a PageData answer is checked against: its own entries, or 0, 1, 2... (a mismatch). */
function requestedFor(payload: Uint8Array): number[] {
  if (payload.byteLength < 4) return [0];
  const v = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const count = Math.min(Math.max(v.getUint32(0, true), 1), MAX_PAGES_PER_REQUEST);
  const own = (Bun.hash.crc32(payload) & 1) === 0;
  const entry = (i: number) => 4 + PAGE_ENTRY * i;
  return Array.from({ length: count }, (_, i) => (own && entry(i) + 4 <= payload.byteLength ? v.getUint32(entry(i), true) : i));
}

export const pageProtocolTarget: FuzzTarget = {
  name: "page-protocol",
  seeds: (rng) => [
    encodeMessage(MessageType.Hello, 0, encodeHello()),
    encodeMessage(MessageType.Hello, 0, encodeHello(PROTOCOL_VERSION, rng.bytes(TOKEN_BYTES))),
    encodeMessage(MessageType.HelloReply, 0, encodeHelloReply({ version: 1, pageSize: PAGE_SIZE, pageCount: rng.int(1, 1 << 20) })),
    encodeMessage(MessageType.PageRequest, 5, encodePageRequest(randomPages(rng))),
    encodeMessage(MessageType.PageData, 5, pageData(rng, [rng.int(0, 100), rng.int(0, 100)])),
    encodeMessage(MessageType.Error, 9, encodeError(ErrorKind.OutOfRange, "page 99 is outside the image")),
  ],
  mutate(message, rng, corpus) {
    const out = rng.bool(0.3) ? mutateBytes(message, rng, corpus) : message.slice();
    if (out.byteLength < HEADER_SIZE) return out;
    const v = new DataView(out.buffer, out.byteOffset, out.byteLength);
    switch (rng.int(0, 4)) {
      case 0:
        v.setUint16(6, rng.pick([0, 1, 2, 3, 4, 5, 6, 0xffff]), true);
        break;
      case 1:
        v.setUint32(8, rng.pick([0, 1, 3, 4, 36, 260, out.byteLength - HEADER_SIZE, 0xffffffff]), true);
        break;
      case 2:
        v.setUint16(4, rng.pick([0, 1, 2]), true);
        break;
      case 3:
        v.setUint32(20, rng.pick([0, 1]), true);
        break;
      default:
        // The count at the start of a PageRequest or PageData payload.
        if (out.byteLength >= HEADER_SIZE + 4) v.setUint32(HEADER_SIZE, rng.pick([0, 1, 2, 64, 65, 0xffffffff]), true);
    }
    return rng.bool(0.9) ? resealMessage(out) : out;
  },
  run(message) {
    const header = decodeHeader(message);
    const payload = message.subarray(HEADER_SIZE);
    verifyChecksum(message.subarray(0, HEADER_SIZE), header, payload);
    switch (header.type) {
      case MessageType.Hello: {
        const { token } = decodeHello(payload);
        if (token && token.byteLength !== TOKEN_BYTES) throw new Error(`Hello token of ${token.byteLength} bytes`);
        break;
      }
      case MessageType.HelloReply:
        decodeHelloReply(payload);
        break;
      case MessageType.PageRequest: {
        const pages = decodePageRequest(payload);
        if (pages.length < 1 || pages.length > MAX_PAGES_PER_REQUEST) throw new Error(`PageRequest decoded to ${pages.length} pages`);
        break;
      }
      case MessageType.PageData:
        check(
          decodePageData(payload, requestedFor(payload)).every((page) => page.byteLength === PAGE_SIZE),
          "PageData gave a short page",
        );
        break;
      case MessageType.Error:
        decodeError(payload);
        break;
      default:
        throw new Error(`decodeHeader passed message type ${header.type}`);
    }
    return "accepted";
  },
  expected: isSnowflockError,
  roundTrip(rng) {
    const pages = randomPages(rng);
    const message = encodeMessage(MessageType.PageRequest, rng.int(0, 0xffffffff), encodePageRequest(pages));
    const header = decodeHeader(message);
    verifyChecksum(message.subarray(0, HEADER_SIZE), header, message.subarray(HEADER_SIZE));
    same(decodePageRequest(message.subarray(HEADER_SIZE)), pages, "decodePageRequest(encodePageRequest(p))");
    const token = rng.bytes(TOKEN_BYTES);
    same(decodeHello(encodeHello(PROTOCOL_VERSION, token)), { version: PROTOCOL_VERSION, token }, "decodeHello(encodeHello(h))");
    const data = pageData(rng, pages.slice(0, 3));
    same(decodePageData(data, pages.slice(0, 3))[0], data.subarray(8, 8 + PAGE_SIZE), "decodePageData(encodePageData(p))");
    const text = `refused: ${rng.int(0, 1e9)}`;
    if (decodeError(encodeError(ErrorKind.BadMessage, text)).text !== text) throw new Error("Error round trip differs");
  },
};

const ADDRESS_KEYS = ["server", "kind", "address", "family", "key", "mtu", "transport", "interface", "port"];

export const pageServerAddressTarget: FuzzTarget = {
  name: "page-server-address",
  seeds: () => ADDRESSES.slice(0, 3).map((a) => new TextEncoder().encode(a)),
  mutate(input, rng, corpus) {
    const text = new TextDecoder().decode(input);
    const tree = text.startsWith("mcdist:") ? parseJson(Buffer.from(text.slice(7), "base64url").toString()) : undefined;
    if (tree === undefined) return mutateBytes(input, rng, corpus);
    const json = stringify(mutateJson(tree, rng, ADDRESS_KEYS, ["udp", "packet", "eth0", "10.0.0.2", "ab".repeat(32)]));
    return new TextEncoder().encode(`mcdist:${Buffer.from(json).toString("base64url")}`);
  },
  run(input) {
    const address = parsePageServer(new TextDecoder().decode(input));
    if (address.kind === "tcp" && address.token.byteLength !== TOKEN_BYTES) throw new Error("a tcp address with a short token");
    if (address.kind === "mcdist" && address.key.byteLength !== 32) throw new Error("an mcdist address with a short key");
    return "accepted";
  },
  expected: isSnowflockError,
};
