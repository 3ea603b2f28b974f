/**
 * A receive ring on a packet socket (PACKET_RX_RING, TPACKET_V2): the kernel writes each frame
 * into a slot of memory it shares with us, so taking one is a few loads and a store instead of a
 * recvfrom(2) — what a receiver of every frame on its segment pays most for. poll(2) on the socket
 * still says when a frame waits. A slot: struct tpacket2_hdr (status u32, len u32, snaplen u32,
 * mac u16, net u16, ...: 32 bytes), the sender's struct sockaddr_ll, then the frame at `mac`.
 * For SOCK_DGRAM the kernel puts the frame at 64 + 16 bytes into the slot.
 */
import { MAP_SHARED, PACKET_RX_RING, PACKET_VERSION, PROT_READ, PROT_WRITE, SOL_PACKET, TPACKET_V2 } from "./constants.ts";
import { mmap, munmap, view } from "./memory.ts";
import { setSocketInt, setSocketOption } from "./udp.ts";

const TP_STATUS_KERNEL = 0;
const TP_STATUS_USER = 1;
/** Where a SOCK_DGRAM frame starts in its slot: TPACKET_ALIGN(32 + sizeof(sockaddr_ll)) + 16. */
const FRAME_OFFSET = 80;
/** The sender's address in a slot: struct sockaddr_ll at 32, its sll_addr at 12. */
const SOURCE_OFFSET = 32 + 12;
const BLOCK_ALIGN = 4096;
const FRAMES_PER_BLOCK = 16;

/** Where a ring is mapped and how its slots lie: plain numbers, so another thread of the process can take the ring over. */
export interface RingGeometry {
  address: number;
  bytes: number;
  slotSize: number;
  slotsPerBlock: number;
  blockSize: number;
  slots: number;
}

export interface PacketRing extends RingGeometry {
  /** The next slot to look at. */
  next: number;
  memory: Uint8Array;
  words: Uint32Array;
  /** The sender of the frame taken last. */
  source: Uint8Array;
}

const alignUp = (n: number, to: number) => Math.ceil(n / to) * to;

/** The slot size of a ring for frames of up to `maxFrame` bytes. */
export function ringSlotSize(maxFrame: number): number {
  return alignUp(FRAME_OFFSET + maxFrame, 16);
}

/**
 * Sets up a receive ring of about `bytes` for frames of up to `maxFrame` bytes on packet socket `fd`
 * (before it is bound: setting up a ring always waits for an RCU grace period, and on a bound
 * socket it unhooks and hooks it up again around that).
 */
export function openRxRing(fd: number, maxFrame: number, bytes: number): PacketRing {
  const slotSize = ringSlotSize(maxFrame);
  const blockSize = alignUp(slotSize * FRAMES_PER_BLOCK, BLOCK_ALIGN);
  const slotsPerBlock = Math.floor(blockSize / slotSize);
  const blocks = Math.max(1, Math.floor(bytes / blockSize));
  setSocketInt(fd, SOL_PACKET, PACKET_VERSION, TPACKET_V2, "PACKET_VERSION");
  // struct tpacket_req: block_size, block_nr, frame_size, frame_nr (u32 each).
  const request = new Uint32Array([blockSize, blocks, slotSize, blocks * slotsPerBlock]);
  setSocketOption(fd, SOL_PACKET, PACKET_RX_RING, new Uint8Array(request.buffer), "PACKET_RX_RING");
  const size = blockSize * blocks;
  const address = mmap(0, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  return ringFromGeometry({ address, bytes: size, slotSize, slotsPerBlock, blockSize, slots: blocks * slotsPerBlock });
}

/** Only the numbers of a ring: what crosses to another thread (a ring's views would be copied whole, megabytes). */
export function ringGeometry(ring: RingGeometry): RingGeometry {
  const { address, bytes, slotSize, slotsPerBlock, blockSize, slots } = ring;
  return { address, bytes, slotSize, slotsPerBlock, blockSize, slots };
}

/** The ring mapped as `geometry` says (in this process), read from its first slot. */
export function ringFromGeometry(geometry: RingGeometry): PacketRing {
  const memory = view(geometry.address, geometry.bytes);
  return {
    ...geometry,
    next: 0,
    memory,
    words: new Uint32Array(memory.buffer, memory.byteOffset, geometry.bytes / 4),
    source: new Uint8Array(6),
  };
}

/**
 * Copies the next waiting frame into `buffer` and gives its slot back to the kernel; returns its
 * length (cut to the buffer's), or undefined if none waits. lastSource() tells who sent it.
 */
export function takeFrame(ring: PacketRing, buffer: Uint8Array): number | undefined {
  const slot = Math.floor(ring.next / ring.slotsPerBlock) * ring.blockSize + (ring.next % ring.slotsPerBlock) * ring.slotSize;
  // Atomics: the status is read before the frame and handed back after it (the kernel's order).
  if ((Atomics.load(ring.words, slot / 4) & TP_STATUS_USER) === 0) return undefined;
  const snaplen = ring.words[slot / 4 + 2]!;
  const at = slot + (ring.memory[slot + 12]! | (ring.memory[slot + 13]! << 8));
  const length = Math.min(snaplen, buffer.byteLength);
  buffer.set(ring.memory.subarray(at, at + length));
  ring.source.set(ring.memory.subarray(slot + SOURCE_OFFSET, slot + SOURCE_OFFSET + 6));
  Atomics.store(ring.words, slot / 4, TP_STATUS_KERNEL);
  ring.next = (ring.next + 1) % ring.slots;
  return length;
}

/** The sender's Ethernet address of the frame takeFrame() returned last (a view it overwrites). */
export function lastSource(ring: PacketRing): Uint8Array {
  return ring.source;
}

export function closeRxRing(ring: PacketRing): void {
  munmap(ring.address, ring.bytes);
}
