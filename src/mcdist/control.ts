/**
 * The frames a clone sends its family's server (REQUEST, RATE) are authenticated: the server sends
 * pages and slows down only for peers holding the family key. A control payload is
 * sender u64 ‖ message ‖ tag, the tag an HMAC over the frame's type, family, sequence and object,
 * the sender and the message. The sender (random per client) and the frame's sequence let the
 * server accept each frame once (replay-window.ts), so a captured request cannot be replayed.
 */
import type { Frame } from "./frame.ts";
import { familyTag, sameTag, TAG_SIZE } from "./messages.ts";

const SENDER_SIZE = 8;
/** Bytes a control payload adds to its message. */
export const CONTROL_OVERHEAD = SENDER_SIZE + TAG_SIZE;

export type ControlHeader = Pick<Frame, "type" | "family" | "sequence" | "object">;

export interface ControlMessage {
  sender: bigint;
  message: Uint8Array;
}

/** A random sender id for one client's life. */
export function newSender(): bigint {
  return crypto.getRandomValues(new BigUint64Array(1))[0]!;
}

/** HMAC-SHA256(key, "C" ‖ type u8 ‖ family u32 ‖ sequence u32 ‖ object u64 ‖ sender u64 ‖ message), first 16 bytes. */
function controlTag(key: Uint8Array, header: ControlHeader, sender: bigint, message: Uint8Array): Uint8Array {
  const fields = new DataView(new ArrayBuffer(26));
  fields.setUint8(0, 0x43);
  fields.setUint8(1, header.type);
  fields.setUint32(2, header.family);
  fields.setUint32(6, header.sequence);
  fields.setBigUint64(10, header.object);
  fields.setBigUint64(18, sender);
  return familyTag(key, fields, message);
}

/** The payload of a control frame with `header`: the sender, the message and their tag. */
export function sealControl(key: Uint8Array, header: ControlHeader, sender: bigint, message: Uint8Array): Uint8Array {
  const out = new Uint8Array(SENDER_SIZE + message.byteLength + TAG_SIZE);
  new DataView(out.buffer).setBigUint64(0, sender);
  out.set(message, SENDER_SIZE);
  out.set(controlTag(key, header, sender, message), SENDER_SIZE + message.byteLength);
  return out;
}

/** The sender and message of a control frame whose tag verifies; undefined if untagged, forged or fragmented. */
export function openControl(key: Uint8Array, frame: Frame): ControlMessage | undefined {
  const { payload } = frame;
  if (frame.fragments !== 1 || payload.byteLength <= CONTROL_OVERHEAD) return undefined;
  const sender = new DataView(payload.buffer, payload.byteOffset, SENDER_SIZE).getBigUint64(0);
  const message = payload.subarray(SENDER_SIZE, payload.byteLength - TAG_SIZE);
  const tag = payload.subarray(payload.byteLength - TAG_SIZE);
  return sameTag(controlTag(key, frame, sender, message), tag) ? { sender, message } : undefined;
}
