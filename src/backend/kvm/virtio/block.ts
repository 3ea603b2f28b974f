/**
 * A virtio block device (virtio 1.2 §5.2) over a raw image file, or a clone's copy-on-write view
 * of one (disk/store.ts): reads, writes, flushes and the device ID, served where the driver
 * notifies (a vCPU thread).
 * A request that leaves the disk, or a write to a read-only one, gets an error status; a
 * malformed chain is the queue's error (queue.ts).
 */
import type { GuestMemory } from "../../../guest-memory/guest-memory.ts";
import type { OpenDisk } from "../../../disk/image.ts";
import { type BlockStore, openBlockStore } from "../../../disk/store.ts";
import { SyscallError } from "../../../sys/errno.ts";
import type { VirtioDevice } from "./mmio.ts";
import { VIRTIO_F_VERSION_1 } from "./mmio.ts";
import { type Chain, type QueueLayout, putUsed, QueueError, takeAvailable } from "./queue.ts";

export const VIRTIO_ID_BLOCK = 2;
export const SECTOR_BYTES = 512;
const VIRTIO_BLK_F_SEG_MAX = 2n;
const VIRTIO_BLK_F_RO = 5n;
const VIRTIO_BLK_F_FLUSH = 9n;
const SEG_MAX = 126;

const Request = { IN: 0, OUT: 1, FLUSH: 4, GET_ID: 8 } as const;
const Status = { OK: 0, IOERR: 1, UNSUPP: 2 } as const;
const HEADER_BYTES = 16;
const ID_BYTES = 20;

/** The image (its fd open read-write unless `readOnly`); GET_ID answers its serial. */
export type BlockDisk = OpenDisk;

export class VirtioBlock implements VirtioDevice {
  readonly deviceId = VIRTIO_ID_BLOCK;
  readonly queues = 1;
  readonly features: bigint;
  readonly config: Uint8Array;
  private readonly store: BlockStore;

  constructor(
    private readonly memory: GuestMemory,
    private readonly disk: BlockDisk,
  ) {
    this.features =
      (1n << VIRTIO_F_VERSION_1) | (1n << VIRTIO_BLK_F_SEG_MAX) | (1n << VIRTIO_BLK_F_FLUSH) | (disk.readOnly ? 1n << VIRTIO_BLK_F_RO : 0n);
    // struct virtio_blk_config: capacity (sectors), size_max, seg_max.
    this.config = new Uint8Array(16);
    const v = new DataView(this.config.buffer);
    v.setBigUint64(0, BigInt(Math.floor(disk.bytes / SECTOR_BYTES)), true);
    v.setUint32(12, SEG_MAX, true);
    this.store = openBlockStore(disk);
  }

  notify(_queue: number, layout: QueueLayout, nextAvail: number): { nextAvail: number; used: number } {
    const taken = takeAvailable(this.memory, layout, nextAvail);
    putUsed(
      this.memory,
      layout,
      taken.chains.map((chain) => ({ head: chain.head, written: this.serve(chain) })),
    );
    return { nextAvail: taken.nextAvail, used: taken.chains.length };
  }

  /** Serves one request; returns the bytes written into the guest's buffers (data and status). */
  private serve(chain: Chain): number {
    const [header, ...rest] = chain.segments;
    const status = rest.at(-1);
    if (!header || header.writable || header.bytes.byteLength < HEADER_BYTES || !status?.writable || status.bytes.byteLength < 1)
      throw new QueueError("a block request without a readable header and a writable status byte");
    const data = rest.slice(0, -1);
    const v = new DataView(header.bytes.buffer, header.bytes.byteOffset, HEADER_BYTES);
    const type = v.getUint32(0, true);
    const sector = v.getBigUint64(8, true);
    const result = this.request(type, sector, data);
    status.bytes[0] = result.status;
    return result.written + 1;
  }

  private request(type: number, sector: bigint, data: Chain["segments"]): { status: number; written: number } {
    const length = data.reduce((n, s) => n + s.bytes.byteLength, 0);
    const start = sector * BigInt(SECTOR_BYTES);
    switch (type) {
      case Request.IN:
      case Request.OUT: {
        const out = type === Request.OUT;
        if (data.some((s) => s.writable === out)) throw new QueueError(`a block ${out ? "write" : "read"} with buffers the wrong way`);
        if (start + BigInt(length) > BigInt(this.disk.bytes)) return { status: Status.IOERR, written: 0 };
        if (out && this.disk.readOnly) return { status: Status.IOERR, written: 0 };
        let offset = Number(start);
        try {
          for (const segment of data) {
            if (out) this.store.write(segment.bytes, offset);
            else this.store.read(segment.bytes, offset);
            offset += segment.bytes.byteLength;
          }
        } catch (error) {
          // The host's error (a full disk, EIO) is the guest's I/O error, not the VM's end.
          if (!(error instanceof SyscallError)) throw error;
          return { status: Status.IOERR, written: 0 };
        }
        return { status: Status.OK, written: out ? 0 : length };
      }
      case Request.FLUSH:
        try {
          this.store.flush();
        } catch {
          return { status: Status.IOERR, written: 0 };
        }
        return { status: Status.OK, written: 0 };
      case Request.GET_ID: {
        const target = data.find((s) => s.writable);
        if (!target) return { status: Status.IOERR, written: 0 };
        const id = new TextEncoder().encode(this.disk.serial).subarray(0, ID_BYTES);
        const n = Math.min(id.byteLength, target.bytes.byteLength);
        target.bytes.set(id.subarray(0, n));
        target.bytes.fill(0, n, Math.min(ID_BYTES, target.bytes.byteLength));
        return { status: Status.OK, written: Math.min(ID_BYTES, target.bytes.byteLength) };
      }
      default:
        return { status: Status.UNSUPP, written: 0 };
    }
  }
}
