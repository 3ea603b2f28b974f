/**
 * The virtio-mmio devices of a machine: where each window and interrupt is (the ACPI tables name
 * them to the guest), and the bus a vCPU thread's MMIO exits go to. Each device's transport
 * state is shared by every thread (mmio.ts), so any vCPU can serve it and the machine can capture it.
 */
import type { GuestMemory } from "../../../guest-memory/guest-memory.ts";
import { setIrqLine } from "../irq-line.ts";
import type { Tap } from "../../../net/tap.ts";
import { type BlockDisk, VirtioBlock } from "./block.ts";
import { VIRTIO_MMIO_WINDOW, type VirtioDevice, VirtioMmio } from "./mmio.ts";
import { VirtioNet } from "./net.ts";

/** Device windows from here up, in the 32-bit hole below the IOAPIC. */
export const VIRTIO_MMIO_BASE = 0xd0000000;
/** IOAPIC pins past the ISA ones and the event device's 16: level-triggered, not shared with the PIC. */
const FIRST_GSI = 17;
export const MAX_VIRTIO_DEVICES = 7;

interface SlotPlace {
  base: number;
  gsi: number;
  /** The transport's registers (mmio.ts). */
  state: SharedArrayBuffer;
}

/** A disk, as every thread needs to rebuild its view of it. */
export interface BlockSlot extends SlotPlace {
  kind: "block";
  /** What was opened: the user's image, or (a clone's disk) the frozen copy of it under an overlay. */
  path: string;
  /** The user's image, for messages. */
  image: string;
  disk: BlockDisk;
}

/** A network device: its tap, its MAC and the receive Worker's control words (net-receiver.ts). */
export interface NetSlot extends SlotPlace {
  kind: "net";
  tap: Tap;
  mac: Uint8Array;
  receive: SharedArrayBuffer;
}

export type VirtioSlot = BlockSlot | NetSlot;

/** The device behind a slot, for one thread. */
export function slotDevice(slot: VirtioSlot, memory: GuestMemory): VirtioDevice {
  return slot.kind === "block" ? new VirtioBlock(memory, slot.disk) : new VirtioNet(memory, slot.tap.fd, slot.mac);
}

export function virtioPlacement(index: number): { base: number; gsi: number } {
  return { base: VIRTIO_MMIO_BASE + index * VIRTIO_MMIO_WINDOW, gsi: FIRST_GSI + index };
}

/** The transports over `slots`, for one thread. */
export class VirtioBus {
  readonly devices: Array<{ base: number; mmio: VirtioMmio }>;

  constructor(slots: VirtioSlot[], memory: GuestMemory, vmFd: number, onError: (message: string) => void) {
    this.devices = slots.map((slot) => ({
      base: slot.base,
      mmio: new VirtioMmio(slotDevice(slot, memory), (level) => setIrqLine(vmFd, slot.gsi, level), onError, slot.state),
    }));
  }

  /** The device whose window holds `address`, and the offset in it. */
  find(address: bigint): { mmio: VirtioMmio; offset: number } | undefined {
    for (const d of this.devices) {
      const offset = Number(address - BigInt(d.base));
      if (offset >= 0 && offset < VIRTIO_MMIO_WINDOW) return { mmio: d.mmio, offset };
    }
    return undefined;
  }
}
