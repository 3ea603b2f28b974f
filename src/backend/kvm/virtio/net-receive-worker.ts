/**
 * A network device's receive side, in a Worker of its own: it waits in poll(2) on the tap, and
 * puts each frame into the next receive buffer the driver made available (net.ts), raising the
 * device's interrupt. While the machine is paused (Receive.HOLD) frames are dropped: a capture
 * sees guest memory and the queue's count agree.
 */
import { EAGAIN, POLLIN } from "../../../sys/constants.ts";
import { SyscallError } from "../../../sys/errno.ts";
import { read } from "../../../sys/files.ts";
import { pollRetrying } from "../../../sys/poll-retrying.ts";
import { GuestMemory } from "../../../guest-memory/guest-memory.ts";
import { WorkerCollector } from "../../../worker-collector.ts";
import type { WorkerEvent } from "../../../worker-link.ts";
import { setIrqLine } from "../irq-line.ts";
import { VirtioMmio } from "./mmio.ts";
import { MAX_FRAME_BYTES, RECEIVE_QUEUE, VirtioNet } from "./net.ts";
import { type NetReceiveInit, type NetReceiveNote, Receive } from "./net-receive-protocol.ts";

declare const self: Worker;

const post = (event: WorkerEvent<object>) => self.postMessage(event);

function receiveLoop(init: NetReceiveInit): void {
  const { slot } = init;
  const memory = GuestMemory.attach(init.memory.layout, init.memory.address);
  const device = new VirtioNet(memory, slot.tap.fd, slot.mac);
  const note = (deviceError: string) => post({ type: "note", note: { deviceError } satisfies NetReceiveNote });
  const mmio = new VirtioMmio(device, (level) => setIrqLine(init.vmFd, slot.gsi, level), note, slot.state);
  const hold = new Int32Array(slot.receive, 0, Receive.WORDS);
  // Room for a frame longer than the device takes, so that one is seen (and dropped) whole.
  const buffer = new Uint8Array(65536);
  const collector = new WorkerCollector();
  post({ type: "ready" });
  for (;;) {
    const [tap, stop] = pollRetrying(
      [
        { fd: slot.tap.fd, events: POLLIN },
        { fd: init.stopFd, events: POLLIN },
      ],
      -1,
    );
    if (stop) return;
    if (!tap) continue;
    for (;;) {
      let length: number;
      try {
        length = read(slot.tap.fd, buffer);
      } catch (error) {
        if (error instanceof SyscallError && error.errno === EAGAIN) break;
        throw error;
      }
      if (length === 0 || length > MAX_FRAME_BYTES) continue;
      const frame = buffer.subarray(0, length);
      mmio.useQueue(RECEIVE_QUEUE, (layout, nextAvail) =>
        Atomics.load(hold, Receive.HOLD) === 1 ? { nextAvail, used: 0 } : device.receive(layout, nextAvail, frame),
      );
    }
    collector.tick();
  }
}

self.onmessage = (message: MessageEvent<NetReceiveInit>) => {
  try {
    receiveLoop(message.data);
  } catch (error) {
    post({ type: "failed", message: `the network device's receive thread: ${(error as Error).message}` });
  }
  post({ type: "stopped" });
};
