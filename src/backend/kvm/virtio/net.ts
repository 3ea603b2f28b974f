/**
 * A virtio network device (virtio 1.2 §5.1) over a tap device: the driver's transmit chains are
 * written to the tap where it notifies (a vCPU thread); frames read from the tap go into the
 * receive buffers the driver made available, from the machine's receive Worker
 * (net-receive-worker.ts). No offloads: every frame carries a zero virtio_net_hdr_v1.
 * The MAC in the config space is the VM's own; a clone gets a new one, which its driver reads
 * when it binds the device again (the sf tool does that in each clone).
 */
import type { GuestMemory } from "../../../guest-memory/guest-memory.ts";
import { SyscallError } from "../../../sys/errno.ts";
import { write } from "../../../sys/files.ts";
import type { VirtioDevice } from "./mmio.ts";
import { VIRTIO_F_VERSION_1 } from "./mmio.ts";
import { type QueueLayout, putUsed, QueueError, type Segment, takeAvailable } from "./queue.ts";

export const VIRTIO_ID_NET = 1;
export const RECEIVE_QUEUE = 0;
export const TRANSMIT_QUEUE = 1;
const VIRTIO_NET_F_MAC = 5n;
const VIRTIO_NET_F_STATUS = 16n;
const VIRTIO_NET_S_LINK_UP = 1;
/** struct virtio_net_hdr_v1: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers. */
export const NET_HEADER_BYTES = 12;
const NUM_BUFFERS_OFFSET = 10;
/** The largest frame either way: 1500 bytes of payload, the Ethernet header and a VLAN tag. */
export const MAX_FRAME_BYTES = 1518;

export class VirtioNet implements VirtioDevice {
  readonly deviceId = VIRTIO_ID_NET;
  readonly queues = 2;
  readonly features = (1n << VIRTIO_F_VERSION_1) | (1n << VIRTIO_NET_F_MAC) | (1n << VIRTIO_NET_F_STATUS);
  readonly config: Uint8Array;
  private readonly frame = new Uint8Array(NET_HEADER_BYTES + MAX_FRAME_BYTES);
  /** Frames the tap would not take (its queue full, the tap down) or that found no buffer: dropped, as a NIC drops them. */
  dropped = 0;

  constructor(
    private readonly memory: GuestMemory,
    private readonly tapFd: number,
    mac: Uint8Array,
  ) {
    // struct virtio_net_config: mac[6], status.
    this.config = new Uint8Array(8);
    this.config.set(mac);
    new DataView(this.config.buffer).setUint16(6, VIRTIO_NET_S_LINK_UP, true);
  }

  /** Transmit chains go to the tap; receive buffers wait for the receive Worker (the queue's count stays). */
  notify(queue: number, layout: QueueLayout, nextAvail: number): { nextAvail: number; used: number } {
    if (queue !== TRANSMIT_QUEUE) return { nextAvail, used: 0 };
    const taken = takeAvailable(this.memory, layout, nextAvail);
    for (const chain of taken.chains) this.transmit(chain.segments);
    putUsed(
      this.memory,
      layout,
      taken.chains.map((chain) => ({ head: chain.head, written: 0 })),
    );
    return { nextAvail: taken.nextAvail, used: taken.chains.length };
  }

  private transmit(segments: Segment[]): void {
    let length = 0;
    for (const segment of segments) {
      if (segment.writable) throw new QueueError("a transmit chain with a writable buffer");
      if (length + segment.bytes.byteLength > this.frame.byteLength) throw new QueueError("a transmitted frame longer than the MTU");
      this.frame.set(segment.bytes, length);
      length += segment.bytes.byteLength;
    }
    if (length <= NET_HEADER_BYTES) throw new QueueError("a transmit chain without a frame after its header");
    try {
      write(this.tapFd, this.frame.subarray(NET_HEADER_BYTES, length));
    } catch (error) {
      // A full tap queue (EAGAIN), a tap set down on the host (EIO): the frame is lost, as on a wire.
      if (!(error instanceof SyscallError)) throw error;
      this.dropped++;
    }
  }

  /**
   * Puts one received frame into the next receive buffer. Returns the queue's new count and
   * whether a buffer was used; with none available the frame is dropped.
   */
  receive(layout: QueueLayout, nextAvail: number, frame: Uint8Array): { nextAvail: number; used: number } {
    const taken = takeAvailable(this.memory, layout, nextAvail, 1);
    const chain = taken.chains[0];
    if (!chain) {
      this.dropped++;
      return { nextAvail, used: 0 };
    }
    if (chain.segments.some((s) => !s.writable)) throw new QueueError("a receive buffer the device may not write");
    const room = chain.segments.reduce((n, s) => n + s.bytes.byteLength, 0);
    let written = 0;
    if (room < NET_HEADER_BYTES + frame.byteLength)
      this.dropped++; // given back empty: the driver counts a length error
    else {
      const header = new Uint8Array(NET_HEADER_BYTES);
      new DataView(header.buffer).setUint16(NUM_BUFFERS_OFFSET, 1, true);
      written = scatter(chain.segments, [header, frame]);
    }
    putUsed(this.memory, layout, [{ head: chain.head, written }]);
    return { nextAvail: taken.nextAvail, used: 1 };
  }
}

/** Copies `parts` one after another across `segments` (which hold them all); returns the bytes copied. */
function scatter(segments: Segment[], parts: Uint8Array[]): number {
  let segment = 0;
  let offset = 0;
  let total = 0;
  for (const part of parts) {
    let from = 0;
    while (from < part.byteLength) {
      const target = segments[segment]!.bytes;
      const n = Math.min(part.byteLength - from, target.byteLength - offset);
      target.set(part.subarray(from, from + n), offset);
      from += n;
      offset += n;
      total += n;
      if (offset === target.byteLength) {
        segment++;
        offset = 0;
      }
    }
  }
  return total;
}
