/**
 * The virtio-mmio transport (virtio 1.2 §4.2, version 2): the register window a driver uses to
 * negotiate features, place its queues and notify the device, and the interrupt status it reads
 * and acknowledges. The registers live in a SharedArrayBuffer behind a lock, like COM1's: every
 * vCPU thread serves accesses, and the machine's thread captures and restores them. The device
 * behind it (block, ...) gets the queue notifications and its own config space.
 */
import { refuse } from "../../../sections.ts";
import { type QueueLayout, QueueError } from "./queue.ts";
import { withSpinLock } from "../../../spin-lock.ts";

export const VIRTIO_MMIO_WINDOW = 0x1000;
export const VIRTIO_F_VERSION_1 = 32n;
export const MAX_QUEUES = 4;
export const QUEUE_SIZE = 256;

const MAGIC = 0x74726976; // "virt"
const VENDOR = 0x4b4c4653; // "SFLK"
const INTERRUPT_USED_BUFFER = 1;
const STATUS_FAILED = 0x80;
const STATUS_NEEDS_RESET = 0x40;
const CONFIG_OFFSET = 0x100;

const Register = {
  MAGIC: 0x000,
  VERSION: 0x004,
  DEVICE_ID: 0x008,
  VENDOR_ID: 0x00c,
  DEVICE_FEATURES: 0x010,
  DEVICE_FEATURES_SEL: 0x014,
  DRIVER_FEATURES: 0x020,
  DRIVER_FEATURES_SEL: 0x024,
  QUEUE_SEL: 0x030,
  QUEUE_NUM_MAX: 0x034,
  QUEUE_NUM: 0x038,
  QUEUE_READY: 0x044,
  QUEUE_NOTIFY: 0x050,
  INTERRUPT_STATUS: 0x060,
  INTERRUPT_ACK: 0x064,
  STATUS: 0x070,
  QUEUE_DESC_LOW: 0x080,
  QUEUE_DESC_HIGH: 0x084,
  QUEUE_DRIVER_LOW: 0x090,
  QUEUE_DRIVER_HIGH: 0x094,
  QUEUE_DEVICE_LOW: 0x0a0,
  QUEUE_DEVICE_HIGH: 0x0a4,
  CONFIG_GENERATION: 0x0fc,
} as const;

/** Int32 slots of the shared state: the transport's, then QUEUE_SLOTS per queue. */
const Slot = {
  LOCK: 0,
  DEVICE_FEATURES_SEL: 1,
  DRIVER_FEATURES_SEL: 2,
  DRIVER_FEATURES_LOW: 3,
  DRIVER_FEATURES_HIGH: 4,
  QUEUE_SEL: 5,
  INTERRUPT_STATUS: 6,
  STATUS: 7,
  IRQ_LEVEL: 8,
  QUEUES: 9,
} as const;
const Q = { NUM: 0, READY: 1, DESC_LOW: 2, DESC_HIGH: 3, DRIVER_LOW: 4, DRIVER_HIGH: 5, DEVICE_LOW: 6, DEVICE_HIGH: 7, NEXT_AVAIL: 8 };
const QUEUE_SLOTS = 9;
/** Queue registers the driver writes as they are (QUEUE_NUM is checked first), and their slots. */
const QUEUE_REGISTERS = new Map<number, number>([
  [Register.QUEUE_READY, Q.READY],
  [Register.QUEUE_DESC_LOW, Q.DESC_LOW],
  [Register.QUEUE_DESC_HIGH, Q.DESC_HIGH],
  [Register.QUEUE_DRIVER_LOW, Q.DRIVER_LOW],
  [Register.QUEUE_DRIVER_HIGH, Q.DRIVER_HIGH],
  [Register.QUEUE_DEVICE_LOW, Q.DEVICE_LOW],
  [Register.QUEUE_DEVICE_HIGH, Q.DEVICE_HIGH],
]);
const WORDS = Slot.QUEUES + MAX_QUEUES * QUEUE_SLOTS;
/** What a descriptor keeps of a transport: every slot but the lock and the IRQ level. */
export const VIRTIO_MMIO_STATE_BYTES = 4 * WORDS;

export function newVirtioMmioState(): SharedArrayBuffer {
  return new SharedArrayBuffer(4 * WORDS);
}

/** What a device type adds to the transport. */
export interface VirtioDevice {
  readonly deviceId: number;
  readonly features: bigint;
  readonly queues: number;
  /** The device's config space (read-only to the driver here). */
  readonly config: Uint8Array;
  /** Serves the chains now available on `queue`; returns what it handed back used. */
  notify(queue: number, layout: QueueLayout, nextAvail: number): { nextAvail: number; used: number };
}

export class VirtioMmio {
  private readonly s: Int32Array;

  constructor(
    private readonly device: VirtioDevice,
    /** Sets the device's (level-triggered) interrupt line. */
    private readonly setIrq: (level: boolean) => void,
    /** Why the device stopped serving (a broken driver), for the VMM's log. */
    private readonly onError: (message: string) => void,
    shared: SharedArrayBuffer = newVirtioMmioState(),
  ) {
    this.s = new Int32Array(shared, 0, WORDS);
  }

  private locked<T>(body: () => T): T {
    return withSpinLock(this.s, Slot.LOCK, body);
  }

  private queueSlot(field: number, queue = this.s[Slot.QUEUE_SEL]!): number | undefined {
    return queue < this.device.queues ? Slot.QUEUES + queue * QUEUE_SLOTS + field : undefined;
  }

  private address(queue: number, low: number, high: number): bigint {
    const at = Slot.QUEUES + queue * QUEUE_SLOTS;
    return (BigInt(this.s[at + high]! >>> 0) << 32n) | BigInt(this.s[at + low]! >>> 0);
  }

  read(offset: number, size: number): number {
    if (offset >= CONFIG_OFFSET) {
      const at = offset - CONFIG_OFFSET;
      let value = 0;
      for (let i = size - 1; i >= 0; i--) value = value * 256 + (this.device.config[at + i] ?? 0);
      return value;
    }
    if (size !== 4) return 0xffffffff;
    return this.locked(() => {
      switch (offset) {
        case Register.MAGIC:
          return MAGIC;
        case Register.VERSION:
          return 2;
        case Register.DEVICE_ID:
          return this.device.deviceId;
        case Register.VENDOR_ID:
          return VENDOR;
        case Register.DEVICE_FEATURES:
          return Number((this.device.features >> BigInt(32 * this.s[Slot.DEVICE_FEATURES_SEL]!)) & 0xffffffffn);
        case Register.QUEUE_NUM_MAX:
          return this.queueSlot(Q.NUM) === undefined ? 0 : QUEUE_SIZE;
        case Register.QUEUE_READY: {
          const slot = this.queueSlot(Q.READY);
          return slot === undefined ? 0 : this.s[slot]!;
        }
        case Register.INTERRUPT_STATUS:
          return this.s[Slot.INTERRUPT_STATUS]!;
        case Register.STATUS:
          return this.s[Slot.STATUS]!;
        case Register.CONFIG_GENERATION:
          return 0;
        default:
          return 0;
      }
    });
  }

  write(offset: number, size: number, value: number): void {
    if (offset >= CONFIG_OFFSET || size !== 4) return; // config space is read-only here
    const notified = this.locked((): number | undefined => {
      const queueField = (field: number) => {
        const slot = this.queueSlot(field);
        if (slot !== undefined) this.s[slot] = value;
      };
      const plainQueueField = QUEUE_REGISTERS.get(offset);
      if (plainQueueField !== undefined) {
        queueField(plainQueueField);
        return undefined;
      }
      switch (offset) {
        case Register.DEVICE_FEATURES_SEL:
          this.s[Slot.DEVICE_FEATURES_SEL] = value;
          break;
        case Register.DRIVER_FEATURES_SEL:
          this.s[Slot.DRIVER_FEATURES_SEL] = value;
          break;
        case Register.DRIVER_FEATURES:
          if (this.s[Slot.DRIVER_FEATURES_SEL]! <= 1) this.s[Slot.DRIVER_FEATURES_LOW + this.s[Slot.DRIVER_FEATURES_SEL]!] = value;
          break;
        case Register.QUEUE_SEL:
          this.s[Slot.QUEUE_SEL] = value;
          break;
        case Register.QUEUE_NUM:
          if (value > 0 && value <= QUEUE_SIZE && (value & (value - 1)) === 0) queueField(Q.NUM);
          break;
        case Register.INTERRUPT_ACK:
          this.s[Slot.INTERRUPT_STATUS] = this.s[Slot.INTERRUPT_STATUS]! & ~value;
          this.updateIrq();
          break;
        case Register.STATUS:
          if (value === 0) this.reset();
          else this.s[Slot.STATUS] = value;
          break;
        case Register.QUEUE_NOTIFY:
          return value;
      }
      return undefined;
    });
    if (notified !== undefined) this.serve(notified);
  }

  /** Serves a queue the driver notified (under the lock: another vCPU may notify it too). */
  private serve(queue: number): void {
    this.useQueue(queue, (layout, nextAvail) => this.device.notify(queue, layout, nextAvail));
  }

  /**
   * Runs `work` on a ready queue under the transport's lock: what the device does on its own (a
   * frame received), as what it does when notified. The queue's count becomes what `work` returns
   * and a used buffer raises the interrupt. Returns false if the queue is not ready or the device
   * needs a reset.
   */
  useQueue(queue: number, work: (layout: QueueLayout, nextAvail: number) => { nextAvail: number; used: number }): boolean {
    return this.locked(() => {
      const base = this.queueSlot(0, queue);
      if (base === undefined || this.s[base + Q.READY] !== 1) return false;
      if (this.s[Slot.STATUS]! & (STATUS_FAILED | STATUS_NEEDS_RESET)) return false;
      const layout = {
        size: this.s[base + Q.NUM]! || QUEUE_SIZE,
        desc: this.address(queue, Q.DESC_LOW, Q.DESC_HIGH),
        avail: this.address(queue, Q.DRIVER_LOW, Q.DRIVER_HIGH),
        used: this.address(queue, Q.DEVICE_LOW, Q.DEVICE_HIGH),
      };
      try {
        const { nextAvail, used } = work(layout, this.s[base + Q.NEXT_AVAIL]!);
        this.s[base + Q.NEXT_AVAIL] = nextAvail;
        if (used > 0) {
          this.s[Slot.INTERRUPT_STATUS] = this.s[Slot.INTERRUPT_STATUS]! | INTERRUPT_USED_BUFFER;
          this.updateIrq();
        }
      } catch (error) {
        if (!(error instanceof QueueError)) throw error;
        // A driver that breaks the queue gets the device marked as needing a reset, not a crashed VM.
        this.s[Slot.STATUS] = this.s[Slot.STATUS]! | STATUS_NEEDS_RESET;
        this.onError(`virtio device ${this.device.deviceId}, queue ${queue}: ${error.message}`);
      }
      return true;
    });
  }

  /** Runs `body` while no access and no device work is under way (the machine holds the receive side with it). */
  exclusive<T>(body: () => T): T {
    return this.locked(body);
  }

  private reset(): void {
    for (let slot: number = Slot.DEVICE_FEATURES_SEL; slot < WORDS; slot++) if (slot !== Slot.IRQ_LEVEL) this.s[slot] = 0;
    this.updateIrq();
  }

  private updateIrq(): void {
    const level = this.s[Slot.INTERRUPT_STATUS] !== 0 ? 1 : 0;
    if (level === this.s[Slot.IRQ_LEVEL]) return;
    this.s[Slot.IRQ_LEVEL] = level;
    this.setIrq(level === 1);
  }

  /** The transport's state for a descriptor (the guest paused: no access is under way). */
  capture(): Uint8Array {
    return this.locked(() => {
      const copy = new Int32Array(this.s);
      copy[Slot.LOCK] = 0;
      copy[Slot.IRQ_LEVEL] = 0;
      return new Uint8Array(copy.buffer);
    });
  }

  /** Takes over a captured transport before the guest runs, raising the interrupt if one was pending. */
  restore(state: Uint8Array): void {
    checkVirtioMmioState(state);
    this.locked(() => {
      const words = new Int32Array(state.buffer.slice(state.byteOffset, state.byteOffset + state.byteLength));
      for (let slot = 1; slot < WORDS; slot++) this.s[slot] = words[slot]!;
      this.s[Slot.IRQ_LEVEL] = 0;
      this.updateIrq();
    });
  }
}

export function checkVirtioMmioState(state: Uint8Array): void {
  if (state.byteLength !== VIRTIO_MMIO_STATE_BYTES)
    refuse(`a virtio-mmio state of ${state.byteLength} bytes, not ${VIRTIO_MMIO_STATE_BYTES}`);
}
