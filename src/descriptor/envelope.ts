/**
 * The descriptor envelope: magic, format version (apart from the package version), flags,
 * checksum and lengths, then the payload, coded by the WASM descriptor codec (zero pages elided,
 * the rest LZ-coded). Envelopes of earlier snowflocks, deflated, are still read. The decoder
 * refuses foreign, newer, truncated, oversized and corrupted input, and caps what it will expand:
 * at most MAX_PAYLOAD_BYTES (derived from the descriptor layout, layout.ts) and MAX_EXPANSION times
 * what is stored, both checked on the header before anything is decoded.
 *
 * The checksum is an unkeyed CRC: it catches corruption, not forgery. Descriptors are authenticated
 * where they cross hosts, by the clone order that carries them (HMAC-SHA256 under the cluster
 * secret, agent-protocol.ts): inline as base64 inside the signed order body, or by multicast
 * against the byte count and SHA-256 the signed order names (McdistClient.fetchDescriptor). Any
 * other descriptor is a local file, trusted like the run directory it lives in; so no second MAC.
 */
import { inflateSync } from "node:zlib";
import { decodeZeroElided, encodeZeroElided } from "../wasm/descriptor-codec.ts";
import { MAX_PAYLOAD_BYTES } from "./layout.ts";
import { refuse } from "../sections.ts";

export const DESCRIPTOR_MAGIC = "SFLKDESC";
export const DESCRIPTOR_VERSION = 1;
export const HEADER_SIZE = 32;
/**
 * The most a payload may expand over what is stored. Zero-page elision alone reaches 32768:1 (one
 * bit for 4 KiB); real descriptors stay far below 8192:1 because each carries register state and
 * pages, while the bitmaps that elide well are bounded by the memory size.
 */
const MAX_EXPANSION = 8192;
/** How the stored payload is coded (header flags). Deflated: written by earlier snowflocks, read only. */
export const FLAG_DEFLATED = 1;
export const FLAG_ZERO_ELIDED = 2;

export interface EnvelopeInfo {
  version: number;
  storedBytes: number;
  rawBytes: number;
}

export function sealEnvelope(payload: Uint8Array): Uint8Array {
  return envelopeAround(encodeZeroElided(payload), payload.byteLength, FLAG_ZERO_ELIDED);
}

/** The header (magic, version, flags, CRC, sizes) and `stored`, a payload of `rawBytes` coded as `flags` say. */
export function envelopeAround(stored: Uint8Array, rawBytes: number, flags: number): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE + stored.byteLength);
  const v = new DataView(out.buffer);
  out.set(new TextEncoder().encode(DESCRIPTOR_MAGIC), 0);
  v.setUint16(8, DESCRIPTOR_VERSION, true);
  v.setUint16(10, flags, true);
  v.setUint32(12, Bun.hash.crc32(stored), true);
  v.setBigUint64(16, BigInt(stored.byteLength), true);
  v.setBigUint64(24, BigInt(rawBytes), true);
  out.set(stored, HEADER_SIZE);
  return out;
}

/** The most the largest payload takes stored (the codecs' worst case, rounded up). */
const MAX_STORED_BYTES = MAX_PAYLOAD_BYTES + Math.ceil(MAX_PAYLOAD_BYTES / 128) + 4096;

/** The largest descriptor file; readers refuse larger files before reading them. */
export const MAX_DESCRIPTOR_FILE_BYTES = HEADER_SIZE + MAX_STORED_BYTES;

/** Checks the header against the size limits, then decodes the payload. */
export function openEnvelope(bytes: Uint8Array): { payload: Uint8Array; info: EnvelopeInfo } {
  if (bytes.byteLength < HEADER_SIZE) refuse(`${bytes.byteLength} bytes is shorter than the ${HEADER_SIZE}-byte header`);
  if (new TextDecoder().decode(bytes.subarray(0, 8)) !== DESCRIPTOR_MAGIC) refuse("wrong magic: this is not a snowflock descriptor");
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = v.getUint16(8, true);
  if (version > DESCRIPTOR_VERSION)
    refuse(
      `format version ${version} is newer than this snowflock reads (${DESCRIPTOR_VERSION})`,
      "use a snowflock at least as new as the one that wrote it",
    );
  if (version < 1) refuse(`format version ${version} does not exist`);
  const flags = v.getUint16(10, true);
  if (flags !== 0 && flags !== FLAG_DEFLATED && flags !== FLAG_ZERO_ELIDED) refuse(`unknown flags 0x${flags.toString(16)}`);
  const storedBytes = v.getBigUint64(16, true);
  const rawBytes = v.getBigUint64(24, true);
  if (rawBytes > BigInt(MAX_PAYLOAD_BYTES)) refuse(`payload of ${rawBytes} bytes is over the ${MAX_PAYLOAD_BYTES}-byte limit`);
  if (storedBytes > BigInt(MAX_STORED_BYTES)) refuse(`stored payload of ${storedBytes} bytes is over the ${MAX_STORED_BYTES}-byte limit`);
  if (rawBytes > storedBytes * BigInt(MAX_EXPANSION))
    refuse(`${storedBytes} stored bytes claim to expand to ${rawBytes}, over ${MAX_EXPANSION}:1`);
  const available = bytes.byteLength - HEADER_SIZE;
  if (Number(storedBytes) > available) refuse(`truncated: the header announces ${storedBytes} payload bytes, ${available} are there`);
  if (Number(storedBytes) < available) refuse(`${available - Number(storedBytes)} bytes of trailing garbage after the payload`);
  const stored = bytes.subarray(HEADER_SIZE);
  if (Bun.hash.crc32(stored) !== v.getUint32(12, true)) refuse("checksum mismatch: the descriptor is corrupted");
  let payload: Uint8Array;
  try {
    if (flags === FLAG_ZERO_ELIDED) payload = decodeZeroElided(stored, Number(rawBytes));
    else if (flags === FLAG_DEFLATED) payload = inflateSync(stored, { maxOutputLength: Number(rawBytes) });
    else payload = stored;
  } catch (error) {
    refuse(`payload does not decode: ${(error as Error).message}`);
  }
  if (payload.byteLength !== Number(rawBytes)) refuse(`payload is ${payload.byteLength} bytes, the header says ${rawBytes}`);
  return { payload, info: { version, storedBytes: Number(storedBytes), rawBytes: Number(rawBytes) } };
}
