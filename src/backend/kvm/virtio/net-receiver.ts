/**
 * The machine's side of a network device's receive Worker (net-receive-worker.ts): starts it,
 * holds it while the machine is paused, and stops it before the tap and guest memory go away.
 */
import type { GuestMemory } from "../../../guest-memory/guest-memory.ts";
import { scaledTimeout } from "../../../timeouts.ts";
import { WorkerLink } from "../../../worker-link.ts";
import type { NetSlot } from "./devices.ts";
import type { VirtioMmio } from "./mmio.ts";
import { type NetReceiveInit, type NetReceiveNote, Receive } from "./net-receive-protocol.ts";

const READY_TIMEOUT_MS = scaledTimeout(10_000);
const STOP_TIMEOUT_MS = scaledTimeout(2000);

/** In a compiled executable a Worker entry keeps its path from the project root (build.ts names it). */
const RECEIVE_WORKER_URL = import.meta.url.includes("/$bunfs/")
  ? new URL("./src/backend/kvm/virtio/net-receive-worker.ts", import.meta.url).href
  : new URL("./net-receive-worker.ts", import.meta.url).href;

export class NetReceiver {
  private readonly hold: Int32Array;

  private constructor(
    private readonly link: WorkerLink<object>,
    slot: NetSlot,
    private readonly mmio: VirtioMmio,
  ) {
    this.hold = new Int32Array(slot.receive, 0, Receive.WORDS);
  }

  static async start(
    slot: NetSlot,
    memory: GuestMemory,
    vmFd: number,
    mmio: VirtioMmio,
    onDeviceError: (message: string) => void,
  ): Promise<NetReceiver> {
    const link = new WorkerLink<object>(
      RECEIVE_WORKER_URL,
      `the receive thread of ${slot.tap.name}`,
      (note) => onDeviceError((note as NetReceiveNote).deviceError),
      "NET",
    );
    const init: NetReceiveInit = { slot, memory: { layout: memory.layout, address: memory.address }, vmFd, stopFd: link.stopFd };
    link.worker.postMessage(init);
    const receiver = new NetReceiver(link, slot, mmio);
    void link.failed.then((error) => onDeviceError(error.message));
    try {
      await link.whenReady(READY_TIMEOUT_MS, `the receive thread of ${slot.tap.name} did not start within ${READY_TIMEOUT_MS / 1000} s`);
    } catch (error) {
      await receiver.stop();
      throw error;
    }
    return receiver;
  }

  /** From now on frames are dropped; none is being put into guest memory when this returns. */
  pause(): void {
    this.mmio.exclusive(() => Atomics.store(this.hold, Receive.HOLD, 1));
  }

  resume(): void {
    Atomics.store(this.hold, Receive.HOLD, 0);
  }

  /** Resolves once the thread no longer touches guest memory or the tap. */
  stop(): Promise<void> {
    return this.link.finish(STOP_TIMEOUT_MS);
  }
}
