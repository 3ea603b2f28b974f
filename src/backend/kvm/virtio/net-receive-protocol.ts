/** What the machine and a network device's receive Worker (net-receive-worker.ts) share. */
import type { MemoryLayout } from "../../../guest-memory/layout.ts";
import type { NetSlot } from "./devices.ts";

/** Int32 words of NetSlot.receive. */
export const Receive = {
  /** 1 while the machine is paused: frames are read and dropped, guest memory is left alone. */
  HOLD: 0,
  WORDS: 1,
} as const;

export interface NetReceiveInit {
  slot: NetSlot;
  memory: { layout: MemoryLayout; address: number };
  vmFd: number;
  stopFd: number;
}

/** A note from the thread: the driver broke a queue (for the VM's log). */
export interface NetReceiveNote {
  deviceError: string;
}
