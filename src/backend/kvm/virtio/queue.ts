/**
 * A split virtqueue (virtio 1.2 §2.7) as the device sees it: take the chains the driver made
 * available, give them back used. Every address and index comes from the guest, so each is
 * checked: a chain that leaves guest memory, loops or is longer than the queue is a broken
 * driver, reported as a QueueError (the device then stops serving the queue).
 */
import type { GuestMemory } from "../../../guest-memory/guest-memory.ts";

const DESC_BYTES = 16;
const DESC_F_NEXT = 1;
const DESC_F_WRITE = 2;
const DESC_F_INDIRECT = 4;

export class QueueError extends Error {}

/** Where a queue's three parts are, and its size (a power of two). */
export interface QueueLayout {
  size: number;
  desc: bigint;
  avail: bigint;
  used: bigint;
}

/** One buffer of a chain: guest memory the device reads from, or (`writable`) writes into. */
export interface Segment {
  bytes: Uint8Array;
  writable: boolean;
}

export interface Chain {
  head: number;
  segments: Segment[];
}

function range(memory: GuestMemory, address: bigint, length: number, what: string): Uint8Array {
  const bytes = memory.guestRange(address, BigInt(length));
  if (!bytes) throw new QueueError(`${what} at 0x${address.toString(16)} (${length} bytes) is outside guest memory`);
  return bytes;
}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * The chains made available since `nextAvail` (the device's own count, kept across calls and
 * clones), at most `limit` of them, and the new count. The queue must be ready.
 */
export function takeAvailable(
  memory: GuestMemory,
  queue: QueueLayout,
  nextAvail: number,
  limit = Number.POSITIVE_INFINITY,
): { chains: Chain[]; nextAvail: number } {
  const avail = view(range(memory, queue.avail, 4 + 2 * queue.size, "the available ring"));
  const published = avail.getUint16(2, true);
  const pending = (published - nextAvail) & 0xffff;
  if (pending > queue.size) throw new QueueError(`the driver made ${pending} chains available in a queue of ${queue.size}`);
  const table = view(range(memory, queue.desc, DESC_BYTES * queue.size, "the descriptor table"));
  const chains: Chain[] = [];
  const taking = Math.min(pending, limit);
  for (let i = 0; i < taking; i++) {
    const head = avail.getUint16(4 + 2 * ((nextAvail + i) % queue.size), true);
    chains.push({ head, segments: walkChain(memory, table, queue.size, head) });
  }
  return { chains, nextAvail: (nextAvail + taking) & 0xffff };
}

function walkChain(memory: GuestMemory, table: DataView, size: number, head: number): Segment[] {
  if (head >= size) throw new QueueError(`chain head ${head} is outside a queue of ${size}`);
  const segments: Segment[] = [];
  let index = head;
  for (;;) {
    if (segments.length === size) throw new QueueError(`the chain from descriptor ${head} loops or is longer than the queue`);
    const at = index * DESC_BYTES;
    const address = table.getBigUint64(at, true);
    const length = table.getUint32(at + 8, true);
    const flags = table.getUint16(at + 12, true);
    if (flags & DESC_F_INDIRECT) throw new QueueError("indirect descriptors were not offered");
    segments.push({ bytes: range(memory, address, length, `descriptor ${index}'s buffer`), writable: (flags & DESC_F_WRITE) !== 0 });
    if (!(flags & DESC_F_NEXT)) return segments;
    index = table.getUint16(at + 14, true);
    if (index >= size) throw new QueueError(`descriptor ${index} is outside a queue of ${size}`);
  }
}

/** Hands chains back: each with the bytes the device wrote into it; the used index last, as the driver reads it. */
export function putUsed(memory: GuestMemory, queue: QueueLayout, done: Array<{ head: number; written: number }>): void {
  if (done.length === 0) return;
  const used = view(range(memory, queue.used, 4 + 8 * queue.size, "the used ring"));
  let index = used.getUint16(2, true);
  for (const { head, written } of done) {
    const at = 4 + 8 * (index % queue.size);
    used.setUint32(at, head, true);
    used.setUint32(at + 4, written, true);
    index = (index + 1) & 0xffff;
  }
  // x86 keeps stores in order: the entries are visible before the index that publishes them.
  used.setUint16(2, index, true);
}
