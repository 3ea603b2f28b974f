/**
 * One vCPU's run loop, in a Worker thread of its own: KVM_RUN blocks only this thread. It serves
 * the exits that need userspace (COM1, the hypercall port, stray MMIO) and parks when the Machine
 * asks it to pause.
 */
import { toArrayBuffer } from "bun:ffi";
import { EAGAIN, EINTR } from "../../sys/constants.ts";
import { errnoName } from "../../sys/errno.ts";
import { ioctl } from "../../sys/ioctl.ts";
import { lastErrno, libc } from "../../sys/libc.ts";
import { gettid } from "../../sys/process.ts";
import { StructView } from "../../sys/layout.ts";
import { GuestMemory } from "../../guest-memory/guest-memory.ts";
import { markAllocated } from "../../guest-memory/allocation-hints.ts";
import { holdStartJit } from "../../jit-policy.ts";
import { WorkerCollector } from "../../worker-collector.ts";
import { HYPERCALL_DOORBELL, handleHypercall, HYPERCALL_PORT, type HypercallHost } from "../../guest/hypercalls.ts";
import * as abi from "./abi.ts";
import { COM1_BASE, COM1_PORTS, Serial, serialIrq } from "./serial.ts";
import { SLEEP_CONTROL_PORT, SLEEP_ENABLE, SLEEP_STATUS_PORT } from "./acpi/tables.ts";
import { VirtioBus } from "./virtio/devices.ts";
import { Command, Control, type VcpuEvent, type VcpuInit, VcpuRunState, type VcpuStats } from "./vcpu-protocol.ts";

declare const self: Worker;

const SYSTEM_EVENTS: Record<number, string> = { 1: "shutdown", 2: "reset", 3: "crash" };

/** The keyboard controller's command port, and its command to pulse the CPU's reset line. */
const I8042_COMMAND_PORT = 0x64;
const I8042_PULSE_RESET = 0xfe;

function runVcpu(init: VcpuInit): void {
  holdStartJit();
  const post = (event: VcpuEvent) => self.postMessage(event);
  const { index, fd, control } = init;
  const run = new StructView(abi.kvm_run, new Uint8Array(toArrayBuffer(init.runAddress as never, 0, init.runSize)));
  const memory = GuestMemory.attach(init.memory.layout, init.memory.address);
  const serial = new Serial(
    (text, partial) => post(partial ? { type: "console", index, text, partial } : { type: "console", index, text }),
    serialIrq(init.vmFd),
    init.serial,
  );
  const stats: VcpuStats = { exits: 0, ioExits: 0, mmioExits: 0, hypercalls: 0, rejectedHypercalls: 0 };
  let finished = false;
  let pendingIo = false;

  const host: HypercallHost = {
    exit(status, result) {
      serial.flush();
      post({ type: "exit", index, status, result });
      finished = true;
    },
    consoleWrite(bytes) {
      for (const b of bytes) serial.put(b);
    },
    cloneId: () => init.cloneId,
    freePages: (address, frames) => post({ type: "free-pages", index, address, frames }),
    allocated: (offset, pages) => init.allocationHints && markAllocated(init.allocationHints, offset, pages),
  };

  const crash = (reason: string) => {
    serial.flush();
    const regs = new StructView(abi.kvm_regs);
    let rip: string | undefined;
    try {
      ioctl(fd, abi.KVM_GET_REGS, regs.bytes, "KVM_GET_REGS");
      rip = `0x${regs.get64("rip").toString(16)}`;
    } catch {}
    post({ type: "crash", index, reason, rip });
    finished = true;
  };

  /** A call block's guest-physical address, from the port or the doorbell: the call, or (a cluster call) the hold until the VMM answers. */
  const hypercall = (blockAddress: number) => {
    stats.hypercalls++;
    const outcome = handleHypercall(memory, blockAddress, host);
    if (outcome.kind === "bad-block") stats.rejectedHypercalls++;
    if (outcome.kind === "deferred") {
      Atomics.store(control, Control.HOLD, 1);
      post({ type: "family-call", index, blockAddress, nr: outcome.nr, args: outcome.args });
    }
  };

  const handleIo = () => {
    stats.ioExits++;
    const port = run.get("io.port");
    const size = run.get("io.size");
    const out = run.get("io.direction") === abi.KVM_EXIT_IO_OUT;
    const data = new DataView(run.bytes.buffer, run.bytes.byteOffset + run.get("io.data_offset"));
    for (let i = 0; i < run.get("io.count"); i++) {
      const at = i * size;
      if (port >= COM1_BASE && port < COM1_BASE + COM1_PORTS) {
        if (out) serial.write(port - COM1_BASE, data.getUint8(at));
        else data.setUint8(at, serial.read(port - COM1_BASE));
      } else if (port === I8042_COMMAND_PORT && out && data.getUint8(at) === I8042_PULSE_RESET) {
        // How Linux reboots a PC without ACPI: a reset here ends the VM (as in Firecracker).
        host.exit(0);
      } else if (port === SLEEP_CONTROL_PORT && out && (data.getUint8(at) & SLEEP_ENABLE) !== 0) {
        // ACPI's poweroff on a hardware-reduced machine (the only sleep state the DSDT offers, S5).
        host.exit(0);
      } else if (port === SLEEP_STATUS_PORT && !out) {
        data.setUint8(at, 0);
      } else if (port === HYPERCALL_PORT && out && size === 4) {
        hypercall(data.getUint32(at, true));
      } else if (!out) {
        for (let b = 0; b < size; b++) data.setUint8(at + b, 0xff); // nothing there: the bus floats high
      }
    }
  };

  const virtio = new VirtioBus(init.virtio, memory, init.vmFd, (message) => post({ type: "device-error", index, message }));
  const handleMmio = () => {
    stats.mmioExits++;
    const data = run.slice("mmio.data");
    const length = Math.min(run.get("mmio.len"), 8);
    const address = run.get64("mmio.phys_addr");
    const write = run.get("mmio.is_write") !== 0;
    if (address === BigInt(HYPERCALL_DOORBELL) && write && length === 4) {
      hypercall(new DataView(data.buffer, data.byteOffset, 4).getUint32(0, true));
      return;
    }
    const target = virtio.find(address);
    if (!target) {
      if (!write) data.fill(0xff); // nothing there: the bus floats high
      return;
    }
    const bytes = new DataView(data.buffer, data.byteOffset, 8);
    if (write) target.mmio.write(target.offset, length, length === 4 ? bytes.getUint32(0, true) : bytes.getUint8(0));
    else {
      const value = target.mmio.read(target.offset, length);
      for (let i = 0; i < length; i++) data[i] = Math.floor(value / 256 ** i) & 0xff;
    }
  };

  Atomics.store(control, Control.TID, gettid());
  Atomics.store(control, Control.STATE, VcpuRunState.RUNNING);
  post({ type: "ready", index });
  const collector = new WorkerCollector();
  while (!finished) {
    const command = Atomics.load(control, Control.COMMAND);
    if (command === Command.STOP) break;
    if (command === Command.PAUSE || Atomics.load(control, Control.HOLD) === 1) {
      // An I/O or MMIO exit is only finished by the next KVM_RUN (RIP moves past the instruction
      // then); finish it now with immediate_exit, or a captured state would repeat it.
      if (pendingIo) {
        run.set("immediate_exit", 1);
        libc.ioctl(fd, abi.KVM_RUN, 0);
        pendingIo = false;
      }
      run.set("immediate_exit", 0);
      Atomics.store(control, Control.STATE, VcpuRunState.PAUSED);
      Atomics.notify(control, Control.STATE);
      for (;;) {
        if (Atomics.load(control, Control.COMMAND) === Command.STOP) break;
        if (Atomics.load(control, Control.HOLD) === 1) Atomics.wait(control, Control.HOLD, 1, 100);
        else if (Atomics.load(control, Control.COMMAND) === Command.PAUSE) Atomics.wait(control, Control.COMMAND, Command.PAUSE, 100);
        else break;
      }
      Atomics.store(control, Control.STATE, VcpuRunState.RUNNING);
      continue;
    }
    if (libc.ioctl(fd, abi.KVM_RUN, 0) < 0) {
      const errno = lastErrno();
      if (errno === EINTR || errno === EAGAIN) {
        // Clear a kick's request, then look at the command again (the Machine stores the
        // command before it sets immediate_exit, so no request is lost).
        run.set("immediate_exit", 0);
        continue;
      }
      crash(`KVM_RUN failed: ${errnoName(errno)}`);
      break;
    }
    stats.exits++;
    const reason = run.get("exit_reason");
    pendingIo = reason === abi.KVM_EXIT_IO || reason === abi.KVM_EXIT_MMIO;
    switch (reason) {
      case abi.KVM_EXIT_IO:
        handleIo();
        break;
      case abi.KVM_EXIT_MMIO:
        handleMmio();
        break;
      case abi.KVM_EXIT_INTR:
        break;
      case abi.KVM_EXIT_HLT:
        break;
      case abi.KVM_EXIT_SHUTDOWN:
        crash("triple fault (KVM_EXIT_SHUTDOWN)");
        break;
      case abi.KVM_EXIT_FAIL_ENTRY:
        crash(
          `VM entry failed (KVM_EXIT_FAIL_ENTRY, hardware reason 0x${run.get64("fail_entry.hardware_entry_failure_reason").toString(16)})`,
        );
        break;
      case abi.KVM_EXIT_INTERNAL_ERROR:
        crash(`KVM internal error (KVM_EXIT_INTERNAL_ERROR, suberror ${run.get("internal.suberror")})`);
        break;
      case abi.KVM_EXIT_SYSTEM_EVENT: {
        const type = run.get("system_event.type");
        crash(`guest ${SYSTEM_EVENTS[type] ?? `system event ${type}`} (KVM_EXIT_SYSTEM_EVENT)`);
        break;
      }
      default:
        crash(`unexpected KVM exit reason ${reason}`);
    }
    collector.tick();
  }
  serial.flush();
  Atomics.store(control, Control.STATE, VcpuRunState.STOPPED);
  Atomics.notify(control, Control.STATE);
  post({ type: "stopped", index, stats });
}

self.onmessage = (event: MessageEvent<VcpuInit>) => {
  try {
    runVcpu(event.data);
  } catch (error) {
    self.postMessage({
      type: "crash",
      index: event.data.index,
      reason: `vCPU thread failed: ${(error as Error).message}`,
    } satisfies VcpuEvent);
    Atomics.store(event.data.control, Control.STATE, VcpuRunState.STOPPED);
    Atomics.notify(event.data.control, Control.STATE);
  }
};
