/**
 * What a Machine and its vCPU Workers say to each other. Commands travel through a small
 * SharedArrayBuffer (a parked Worker cannot read messages); events travel by postMessage.
 */
import type { AllocationHints } from "../../guest-memory/allocation-hints.ts";
import type { MemoryLayout } from "../../guest-memory/layout.ts";
import type { VirtioSlot } from "./virtio/devices.ts";

/**
 * HOLD is set by the Worker itself while the Machine serves one of its hypercalls. TID is the
 * Worker's thread id, stored before its first look at COMMAND: so a Machine that stores a command
 * and then finds TID 0 knows the Worker will still see that command.
 */
export const Control = { COMMAND: 0, STATE: 1, HOLD: 2, TID: 3, WORDS: 4 } as const;
export const Command = { RUN: 0, PAUSE: 1, STOP: 2 } as const;
export const VcpuRunState = { STARTING: 0, RUNNING: 1, PAUSED: 2, STOPPED: 3 } as const;

export interface VcpuInit {
  index: number;
  fd: number;
  /** The VM's fd: the UART raises its interrupt with KVM_IRQ_LINE on it. */
  vmFd: number;
  runAddress: number;
  runSize: number;
  memory: { layout: MemoryLayout; address: number };
  cloneId: number;
  /** COM1's registers, shared by every vCPU thread and the machine (serial.ts). */
  serial: SharedArrayBuffer;
  /** The virtio-mmio devices (virtio/devices.ts). */
  virtio: VirtioSlot[];
  /** Where the guest's allocator hands-outs are marked (a clone with memory on demand, allocation-hints on). */
  allocationHints?: AllocationHints;
  /** Int32Array over a SharedArrayBuffer of Control.WORDS words. */
  control: Int32Array;
}

export interface VcpuStats {
  exits: number;
  ioExits: number;
  mmioExits: number;
  hypercalls: number;
  rejectedHypercalls: number;
}

export type VcpuEvent =
  | { type: "ready"; index: number }
  /** A console line, or (`partial`) the line so far where the guest stopped printing. */
  | { type: "console"; index: number; text: string; partial?: true }
  | { type: "exit"; index: number; status: number; result?: string }
  | { type: "crash"; index: number; reason: string; rip?: string }
  | { type: "stopped"; index: number; stats: VcpuStats }
  /** A device stopped serving a queue the guest broke (it needs a reset); the VM goes on. */
  | { type: "device-error"; index: number; message: string }
  /** The guest told where its page allocator's bitmap is (SF_HC_FREE_PAGES). */
  | { type: "free-pages"; index: number; address: number; frames: number }
  /** A hypercall the Machine serves (the Impromptu Cluster API); the vCPU is held until then. */
  | { type: "family-call"; index: number; blockAddress: number; nr: number; args: bigint[] };
