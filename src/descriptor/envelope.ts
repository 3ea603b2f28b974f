/**
 * The descriptor envelope: magic, format version (apart from the package version), flags,
 * checksum and lengths, then the payload, coded by the WASM descriptor codec (zero pages elided,
 * the rest LZ-coded). Envelopes of earlier snowflocks, deflated, are still read. The decoder
 * refuses foreign, newer, truncated, oversized and corrupted input, and caps what it will expand.
 */
import { inflateSync } from "node:zlib";
import { SnowflockError } from "../errors.ts";
import { decodeZeroElided, encodeZeroElided } from "../wasm/descriptor-codec.ts";

export const DESCRIPTOR_MAGIC = "SFLKDESC";
export const DESCRIPTOR_VERSION = 1;
export const HEADER_SIZE = 32;
/** No descriptor of a sane VM comes near this; larger input is refused before inflating. */
export const MAX_PAYLOAD_BYTES = 256 * 1024 * 1024;
/** Written by earlier snowflocks; read only. */
const FLAG_DEFLATED = 1;
const FLAG_ZERO_ELIDED = 2;

export interface EnvelopeInfo {
  version: number;
  storedBytes: number;
  rawBytes: number;
}

function bad(why: string, hint?: string): never {
  throw new SnowflockError("DESCRIPTOR", `not a usable VM descriptor: ${why}`, hint);
}

export function sealEnvelope(payload: Uint8Array): Uint8Array {
  const stored = encodeZeroElided(payload);
  const out = new Uint8Array(HEADER_SIZE + stored.byteLength);
  const v = new DataView(out.buffer);
  out.set(new TextEncoder().encode(DESCRIPTOR_MAGIC), 0);
  v.setUint16(8, DESCRIPTOR_VERSION, true);
  v.setUint16(10, FLAG_ZERO_ELIDED, true);
  v.setUint32(12, Bun.hash.crc32(stored), true);
  v.setBigUint64(16, BigInt(stored.byteLength), true);
  v.setBigUint64(24, BigInt(payload.byteLength), true);
  out.set(stored, HEADER_SIZE);
  return out;
}

export function openEnvelope(bytes: Uint8Array): { payload: Uint8Array; info: EnvelopeInfo } {
  if (bytes.byteLength < HEADER_SIZE) bad(`${bytes.byteLength} bytes is shorter than the ${HEADER_SIZE}-byte header`);
  if (new TextDecoder().decode(bytes.subarray(0, 8)) !== DESCRIPTOR_MAGIC) bad("wrong magic: this is not a snowflock descriptor");
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = v.getUint16(8, true);
  if (version > DESCRIPTOR_VERSION) bad(`format version ${version} is newer than this snowflock reads (${DESCRIPTOR_VERSION})`, "use a snowflock at least as new as the one that wrote it");
  if (version < 1) bad(`format version ${version} does not exist`);
  const flags = v.getUint16(10, true);
  if (flags !== 0 && flags !== FLAG_DEFLATED && flags !== FLAG_ZERO_ELIDED) bad(`unknown flags 0x${flags.toString(16)}`);
  const storedBytes = v.getBigUint64(16, true);
  const rawBytes = v.getBigUint64(24, true);
  if (rawBytes > BigInt(MAX_PAYLOAD_BYTES) || storedBytes > BigInt(MAX_PAYLOAD_BYTES)) bad(`payload of ${rawBytes} bytes is over the ${MAX_PAYLOAD_BYTES}-byte limit`);
  const available = bytes.byteLength - HEADER_SIZE;
  if (Number(storedBytes) > available) bad(`truncated: the header announces ${storedBytes} payload bytes, ${available} are there`);
  if (Number(storedBytes) < available) bad(`${available - Number(storedBytes)} bytes of trailing garbage after the payload`);
  const stored = bytes.subarray(HEADER_SIZE);
  if (Bun.hash.crc32(stored) !== v.getUint32(12, true)) bad("checksum mismatch: the descriptor is corrupted");
  let payload: Uint8Array;
  try {
    if (flags === FLAG_ZERO_ELIDED) payload = decodeZeroElided(stored, Number(rawBytes));
    else if (flags === FLAG_DEFLATED) payload = inflateSync(stored, { maxOutputLength: Number(rawBytes) });
    else payload = stored;
  } catch (error) {
    bad(`payload does not decode: ${(error as Error).message}`);
  }
  if (payload.byteLength !== Number(rawBytes)) bad(`payload is ${payload.byteLength} bytes, the header says ${rawBytes}`);
  return { payload, info: { version, storedBytes: Number(storedBytes), rawBytes: Number(rawBytes) } };
}
