/**
 * A running KVM virtual machine: guest memory, the KVM VM, and one Worker per vCPU. It can boot a
 * kernel image, pause every vCPU, capture the whole machine state, and restore such a state into
 * a fresh machine — the base the clone pipeline builds on.
 */
import { SnowflockError } from "../../errors.ts";
import { parseKernel } from "../../guest/kernel-guest.ts";
import { GuestError, writeHypercallResult } from "../../guest/hypercalls.ts";
import { GuestMemory } from "../../guest-memory/guest-memory.ts";
import { kickVcpu, installKickHandler } from "./kick.ts";
import { loadPvhKernel, setFlat32EntryState, setPvhEntryState } from "./pvh.ts";
import { loadLinuxKernel } from "./linux-boot.ts";
import type {
  BackendState,
  CapturedMachine,
  CaptureOptions,
  FreePageMap,
  GuestCall,
  Machine,
  MachineEnd,
  MachineOptions,
} from "../backend.ts";
import { eagerPages, type KvmState } from "./persist.ts";
import { KvmVm } from "./vm.ts";
import { newSerialState, Serial, serialIrq } from "./serial.ts";
import { setIrqLine } from "./irq-line.ts";
import { renewVmGenerationId } from "./acpi/vmgenid.ts";
import { MAX_VIRTIO_DEVICES, VirtioBus, type VirtioSlot } from "./virtio/devices.ts";
import { closeSlot, describeSlot, openBootSlots, openRestoredSlots, writableDisk } from "./virtio/slots.ts";
import { NetReceiver } from "./virtio/net-receiver.ts";
import { close } from "../../sys/files.ts";
import { tmpdir } from "node:os";
import { captureVcpu, restoreVcpu, savedMsrIndices } from "./vcpu-state.ts";
import { Command, Control, type VcpuEvent, type VcpuInit, VcpuRunState, type VcpuStats } from "./vcpu-protocol.ts";
import { scaledTimeout } from "../../timeouts.ts";

const PAUSE_TIMEOUT_MS = scaledTimeout(5000);
const START_TIMEOUT_MS = scaledTimeout(10_000);

/**
 * In a compiled executable every module's import.meta.url is the executable's root and a Worker
 * entry keeps its path from the project root (build.ts names it as an entrypoint).
 */
const VCPU_WORKER_URL = import.meta.url.includes("/$bunfs/")
  ? new URL("./src/backend/kvm/vcpu-worker.ts", import.meta.url).href
  : new URL("./vcpu-worker.ts", import.meta.url).href;

/** vCPU threads started ahead (the warm-up machine's, in a ready VMM: pool/ready-process.ts); a machine's start takes these first. */
const spareWorkers: Worker[] = [];

/** The warm-up machine (KvmMachine.warmUp): its size, and where its program sits (guest-physical). */
const WARM_UP_MEMORY_BYTES = 2 << 20;
const WARM_UP_ENTRY = 0x1000;
/**
 * Its program, in flat 32-bit mode: "w\n" to COM1 (mov dx,0x3f8; mov al,'w'; out dx,al; mov al,10;
 * out dx,al), then the keyboard controller's reset (mov al,0xfe; out 0x64,al), which ends the
 * machine; a halt loop behind, should it not.
 */
const WARM_UP_PROGRAM = [0x66, 0xba, 0xf8, 0x03, 0xb0, 0x77, 0xee, 0xb0, 0x0a, 0xee, 0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd];
const WARM_UP_TIMEOUT_MS = scaledTimeout(5000);

function scratchDirectory(options: Pick<MachineOptions, "scratchDirectory">): string {
  return options.scratchDirectory ?? tmpdir();
}

export class KvmMachine implements Machine {
  private workers: Worker[] = [];
  private controls: Int32Array[] = [];
  private stats: VcpuStats[] = [];
  private end: MachineEnd | undefined;
  private resolveEnded!: (end: MachineEnd) => void;
  private stoppedCount = 0;
  private touchedAtEnd: number | undefined;
  /** The warm-up machine's: its vCPU Workers go back to the spares when it ends, their code compiled. */
  private keepWorkers = false;
  /** The network devices' receive threads: held while paused, stopped before memory goes. */
  private receivers: NetReceiver[] = [];
  /** Where the guest's page allocator keeps its bitmap, if it said (SF_HC_FREE_PAGES); clones inherit it. */
  freePageMap: FreePageMap | undefined;
  /** Settles once every vCPU thread has stopped, with why the machine ended. */
  readonly ended: Promise<MachineEnd>;

  /** COM1's registers, shared with every vCPU thread; `serial` is this thread's door to them. */
  private readonly serialState = newSerialState();
  private readonly serial: Serial;

  /** This thread's door to the virtio devices' shared registers (capture and restore). */
  private readonly virtioBus: VirtioBus;

  private constructor(
    readonly vm: KvmVm,
    readonly memory: GuestMemory,
    private readonly options: MachineOptions,
    private readonly virtio: VirtioSlot[] = [],
  ) {
    this.ended = new Promise((resolve) => (this.resolveEnded = resolve));
    this.serial = new Serial(() => {}, serialIrq(vm.fd), this.serialState);
    this.virtioBus = new VirtioBus(virtio, memory, vm.fd, (message) => options.onDeviceError?.(message));
  }

  /**
   * A machine with `image` loaded and the boot vCPU at its entry: a Linux bzImage's 32-bit boot
   * protocol entry (with `initrd`), else a PVH ELF's entry. Call start() to run it.
   */
  static boot(image: Uint8Array, memoryBytes: number, cmdline: string, options: MachineOptions, initrd?: Uint8Array): KvmMachine {
    const kernel = parseKernel(image);
    if (initrd && kernel.kind === "pvh")
      throw new SnowflockError("GUEST_IMAGE", "an initrd goes with a Linux bzImage, not with a PVH ELF kernel");
    const disks = options.disks ?? [];
    const devices = disks.length + (options.net ? 1 : 0);
    if (devices > 0 && kernel.kind !== "linux")
      throw new SnowflockError(
        "GUEST_IMAGE",
        "disks and networks go with a Linux bzImage (its ACPI tables name them), not with a PVH ELF kernel",
      );
    if (devices > MAX_VIRTIO_DEVICES)
      throw new SnowflockError("USAGE", `${devices} virtio devices (disks and network); a VM has at most ${MAX_VIRTIO_DEVICES}`);
    const virtio = openBootSlots(disks, options.net);
    let memory: GuestMemory | undefined;
    let vm: KvmVm | undefined;
    try {
      memory = GuestMemory.create(memoryBytes);
      vm = new KvmVm(memory, options.vcpus);
      if (kernel.kind === "linux") {
        const devices = virtio.map(({ base, gsi }) => ({ base, gsi }));
        const boot = loadLinuxKernel(memory, kernel.image, cmdline, options.vcpus, initrd, devices);
        setFlat32EntryState(vm.vcpus[0]!.fd, boot.entry, { rsi: boot.zeroPage });
      } else {
        loadPvhKernel(memory, kernel.image, cmdline);
        setPvhEntryState(vm.vcpus[0]!.fd, kernel.image.pvhEntry);
      }
      return new KvmMachine(vm, memory, options, virtio);
    } catch (error) {
      for (const slot of virtio) closeSlot(slot);
      vm?.close();
      memory?.close();
      throw error;
    }
  }

  /** A fresh machine that carries on from `state` over `memory` (which it takes ownership of). */
  static restore(saved: BackendState, memory: GuestMemory, options: Omit<MachineOptions, "vcpus">): KvmMachine {
    if (saved.backend !== "kvm") throw new SnowflockError("VM_STATE", `a ${saved.backend} machine state cannot be restored on KVM`);
    const state = saved as KvmState;
    if (memory.size !== state.memorySize)
      throw new SnowflockError("VM_STATE", `memory of ${memory.size} bytes does not match the captured ${state.memorySize}`);
    const vm = new KvmVm(memory, state.vcpus.length);
    let virtio: VirtioSlot[] = [];
    try {
      virtio = openRestoredSlots(state.virtio ?? [], scratchDirectory(options));
      vm.restoreDevices(state.devices);
      state.vcpus.forEach((vcpu, i) => restoreVcpu(vm.vcpus[i]!.fd, vcpu));
      const machine = new KvmMachine(vm, memory, { ...options, vcpus: state.vcpus.length }, virtio);
      // Descriptors from before the UART was kept restore it reset (the built-in guest only polls it).
      if (state.serial) machine.serial.restore(state.serial);
      (state.virtio ?? []).forEach((device, i) => machine.virtioBus.devices[i]!.mmio.restore(device.state));
      // After the LAPICs and devices: their restore would drop the event device's interrupt.
      renewVmGenerationId(memory, (gsi, level) => setIrqLine(vm.fd, gsi, level));
      return machine;
    } catch (error) {
      for (const slot of virtio) closeSlot(slot);
      vm.close();
      memory.close();
      throw error;
    }
  }

  /**
   * Runs a throwaway machine from its restore to its end (a console line, then a reset), so that
   * the machine this process builds next, a ready VMM's clone (pool/), runs compiled code rather
   * than code parsed and interpreted on first use: restore, start, the vCPU loop's exits, the end.
   * Its vCPU Workers become the spares that machine starts on. Call it before prestartVm: it
   * makes VMs of its own.
   */
  static async warmUp(vcpus: number): Promise<void> {
    const memory = GuestMemory.create(WARM_UP_MEMORY_BYTES, "snowflock-warm-up");
    let machine: KvmMachine;
    try {
      memory.bytes.set(WARM_UP_PROGRAM, WARM_UP_ENTRY);
      machine = KvmMachine.restore(freshState(memory, vcpus), memory, {});
    } catch (error) {
      memory.close();
      throw error;
    }
    machine.keepWorkers = true;
    await machine.start();
    const timer = setTimeout(() => void machine.stop(), WARM_UP_TIMEOUT_MS);
    const end = await machine.ended;
    clearTimeout(timer);
    if (end.kind !== "exit")
      throw new SnowflockError(
        "INTERNAL",
        `the warm-up machine ended ${end.kind === "crash" ? `in a crash: ${end.reason}` : "without its reset"}`,
      );
  }

  get vcpuCount(): number {
    return this.vm.vcpus.length;
  }

  /** Starts each network device's receive Worker, then one Worker per vCPU; resolves when every one is in its run loop. */
  async start(): Promise<void> {
    installKickHandler();
    for (const [i, slot] of this.virtio.entries()) {
      if (slot.kind !== "net") continue;
      const mmio = this.virtioBus.devices[i]!.mmio;
      this.receivers.push(await NetReceiver.start(slot, this.memory, this.vm.fd, mmio, (m) => this.options.onDeviceError?.(m)));
    }
    const ready = this.vm.vcpus.map((vcpu) => {
      const control = new Int32Array(new SharedArrayBuffer(Control.WORDS * 4));
      const worker = spareWorkers.shift() ?? new Worker(VCPU_WORKER_URL);
      this.workers.push(worker);
      this.controls.push(control);
      return new Promise<void>((resolve, reject) => {
        worker.onmessage = (message: MessageEvent<VcpuEvent>) => {
          if (message.data.type === "ready") resolve();
          this.onEvent(message.data);
        };
        worker.onerror = (error) => reject(new SnowflockError("INTERNAL", `vCPU ${vcpu.index} thread failed to start: ${error.message}`));
        const init: VcpuInit = {
          index: vcpu.index,
          fd: vcpu.fd,
          vmFd: this.vm.fd,
          runAddress: vcpu.runAddress,
          runSize: this.vm.host.vcpuMmapSize,
          memory: { layout: this.memory.layout, address: this.memory.address },
          cloneId: this.options.cloneId ?? 0,
          serial: this.serialState,
          virtio: this.virtio,
          allocationHints: this.options.allocationHints,
          control,
        };
        worker.postMessage(init);
      });
    });
    let timer: Timer | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new SnowflockError("INTERNAL", `vCPU threads did not start within ${START_TIMEOUT_MS / 1000} s`)),
        START_TIMEOUT_MS,
      );
    });
    try {
      await Promise.race([Promise.all(ready), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  private onEvent(event: VcpuEvent): void {
    switch (event.type) {
      case "console":
        if (event.partial) this.options.onConsolePartial?.(event.text);
        else this.options.onConsole?.(event.text, event.index);
        break;
      case "exit":
        this.finish({ kind: "exit", status: event.status, ...(event.result === undefined ? {} : { result: event.result }) });
        break;
      case "crash":
        this.finish({ kind: "crash", reason: event.reason, vcpu: event.index, rip: event.rip });
        break;
      case "family-call":
        void this.serveClusterCall(event);
        break;
      case "device-error":
        this.options.onDeviceError?.(event.message);
        break;
      case "free-pages":
        this.freePageMap = { address: event.address, frames: event.frames };
        break;
      case "stopped":
        this.stats[event.index] = event.stats;
        if (++this.stoppedCount === this.workers.length) void this.release();
        break;
    }
  }

  private async serveClusterCall(event: Extract<VcpuEvent, { type: "family-call" }>): Promise<void> {
    const call: GuestCall = { vcpu: event.index, nr: event.nr, args: event.args, blockAddress: event.blockAddress };
    let result: bigint;
    try {
      result = this.options.onGuestCall ? await this.options.onGuestCall(call) : GuestError.ENOSYS;
    } catch {
      result = GuestError.EINVAL;
    }
    if (this.end) return;
    writeHypercallResult(this.memory, event.blockAddress, result);
    const control = this.controls[event.index]!;
    Atomics.store(control, Control.HOLD, 0);
    Atomics.notify(control, Control.HOLD);
  }

  /** The first end wins; every other vCPU is told to stop. */
  private finish(end: MachineEnd): void {
    this.end ??= end;
    this.command(Command.STOP);
  }

  private async release(): Promise<void> {
    for (const w of this.workers) {
      if (!this.keepWorkers) w.terminate();
      else {
        w.onmessage = null;
        spareWorkers.push(w);
      }
    }
    await Promise.all(this.receivers.map((r) => r.stop()));
    this.touchedAtEnd = this.pagesTouched();
    this.options.beforeClose?.();
    await this.options.afterStop?.(this.end ?? { kind: "stopped" });
    this.close();
    this.resolveEnded(this.end ?? { kind: "stopped" });
  }

  private close(): void {
    for (const slot of this.virtio) closeSlot(slot);
    this.vm.close();
    this.memory.close();
  }

  private command(command: number): void {
    this.controls.forEach((control, i) => {
      Atomics.store(control, Control.COMMAND, command);
      Atomics.notify(control, Control.COMMAND);
      if (command === Command.RUN) return;
      // A thread that has not stored its TID yet will see the command before its first KVM_RUN.
      const tid = Atomics.load(control, Control.TID);
      kickVcpu(this.vm.vcpus[i]!.runAddress, tid === 0 ? undefined : tid);
    });
  }

  /** Stops every vCPU where it is; resolves when all are parked (or have already stopped). */
  pause(): void {
    if (this.end) throw new SnowflockError("VM_STATE", "the VM has already stopped");
    this.command(Command.PAUSE);
    const deadline = performance.now() + PAUSE_TIMEOUT_MS;
    for (const control of this.controls) {
      for (;;) {
        const state = Atomics.load(control, Control.STATE);
        if (state === VcpuRunState.PAUSED || state === VcpuRunState.STOPPED) break;
        const left = deadline - performance.now();
        if (left <= 0) throw new SnowflockError("VM_STATE", `a vCPU did not pause within ${PAUSE_TIMEOUT_MS} ms`);
        Atomics.wait(control, Control.STATE, state, Math.min(left, 50));
      }
    }
    for (const receiver of this.receivers) receiver.pause();
  }

  resume(): void {
    for (const receiver of this.receivers) receiver.resume();
    this.command(Command.RUN);
  }

  /**
   * The whole machine state except bulk memory, and the pages a clone needs at once. The machine
   * must be paused. A writable disk is frozen for clones (`freezeDisks`) or refuses the capture.
   */
  capture(options: CaptureOptions = {}): CapturedMachine {
    if (this.controls.some((c) => Atomics.load(c, Control.STATE) !== VcpuRunState.PAUSED)) {
      throw new SnowflockError("VM_STATE", "capture needs every vCPU paused");
    }
    const writable = writableDisk(this.virtio);
    if (writable && !options.freezeDisks)
      throw new SnowflockError(
        "VM_STATE",
        `the VM writes its disk ${writable}: a restored copy would write the same image`,
        `give the disk read-only (--disk ${writable},ro) to save the VM; a fork gives each clone a copy-on-write disk`,
      );
    const msrs = savedMsrIndices(this.vm.host.msrIndices);
    const frozenDisks: number[] = [];
    try {
      const state: KvmState = {
        backend: "kvm",
        devices: this.vm.captureDevices(),
        serial: this.serial.capture(),
        virtio: this.virtio.map((slot, i) =>
          describeSlot(slot, this.virtioBus.devices[i]!.mmio.capture(), scratchDirectory(this.options), frozenDisks),
        ),
        vcpus: this.vm.vcpus.map((v) => captureVcpu(v.fd, msrs)),
        memorySize: this.memory.size,
      };
      return { state, eagerPages: eagerPages(state, this.memory), frozenDisks };
    } catch (error) {
      for (const fd of frozenDisks) close(fd);
      throw error;
    }
  }

  /** Bytes typed at the console: COM1 holds them for the guest to read. Returns how many it took. */
  consoleInput(bytes: Uint8Array): number {
    if (this.end) throw new SnowflockError("VM_STATE", "the VM has already stopped");
    return this.serial.receive(bytes);
  }

  /** Ends the machine from outside; resolves with how it ended. */
  async stop(): Promise<MachineEnd> {
    if (this.workers.length === 0) {
      this.options.beforeClose?.();
      this.close();
      this.resolveEnded({ kind: "stopped" });
    } else this.finish({ kind: "stopped" });
    return this.ended;
  }

  /** Guest pages written so far (or, once ended, by the end). */
  pagesTouched(): number {
    if (this.touchedAtEnd !== undefined) return this.touchedAtEnd;
    using touched = this.memory.touchedPages();
    return touched.popcount();
  }

  vcpuStats(): VcpuStats[] {
    return this.stats;
  }
}

/** The state of a VM just made over `memory`, its boot vCPU at the warm-up program: what a capture of it would hold. */
function freshState(memory: GuestMemory, vcpus: number): KvmState {
  const vm = new KvmVm(memory, vcpus);
  try {
    setFlat32EntryState(vm.vcpus[0]!.fd, WARM_UP_ENTRY, {});
    const msrs = savedMsrIndices(vm.host.msrIndices);
    return { backend: "kvm", devices: vm.captureDevices(), vcpus: vm.vcpus.map((v) => captureVcpu(v.fd, msrs)), memorySize: memory.size };
  } finally {
    vm.close();
  }
}
