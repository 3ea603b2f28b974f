/**
 * One KVM virtual machine: its fd, in-kernel interrupt controllers and PIT, memory slots over a
 * GuestMemory, and vCPU fds with their kvm_run mappings. Mechanism only; the Machine drives it.
 */
import { SnowflockError } from "../../errors.ts";
import { MAP_SHARED, PROT_READ, PROT_WRITE } from "../../sys/constants.ts";
import { close } from "../../sys/files.ts";
import { ioctl, ioctlRestarting } from "../../sys/ioctl.ts";
import { mmap, munmap } from "../../sys/memory.ts";
import { StructView } from "../../sys/layout.ts";
import type { GuestMemory } from "../../guest-memory/guest-memory.ts";
import * as abi from "./abi.ts";
import { vcpuCpuid } from "./cpuid.ts";
import { type KvmHost, kvmHost, supportedCpuid } from "./host.ts";

/** Addresses in the hole below 4 GiB that Intel's VMX needs for real mode; unused on AMD. */
const TSS_ADDRESS = 0xfffbd000;
const IDENTITY_MAP_ADDRESS = 0xfffbc000;

export interface VcpuHandle {
  index: number;
  fd: number;
  /** Host address of this vCPU's kvm_run page, shared with its Worker. */
  runAddress: number;
}

export interface DeviceState {
  picMaster: Uint8Array;
  picSlave: Uint8Array;
  ioapic: Uint8Array;
  pit: Uint8Array;
  clock: Uint8Array;
}

export class KvmVm {
  readonly fd!: number;
  readonly vcpus: VcpuHandle[] = [];
  readonly host: KvmHost;

  constructor(
    readonly memory: GuestMemory,
    vcpuCount: number,
  ) {
    this.host = kvmHost();
    const spare = spareVm;
    spareVm = undefined;
    try {
      this.fd = spare?.fd ?? createVmFd(this.host);
      if (spare) this.vcpus.push(...spare.vcpus.splice(0, vcpuCount));
      for (const v of spare?.vcpus ?? []) closeVcpu(this.host, v); // more than this machine has
      memory.layout.regions.forEach((region, slot) => {
        const r = new StructView(abi.kvm_userspace_memory_region)
          .set("slot", slot)
          .set("guest_phys_addr", region.guestAddress)
          .set("memory_size", region.size)
          .set("userspace_addr", memory.address + region.offset);
        ioctl(this.fd, abi.KVM_SET_USER_MEMORY_REGION, r.bytes, "KVM_SET_USER_MEMORY_REGION");
      });
      for (let index = this.vcpus.length; index < vcpuCount; index++) this.vcpus.push(createVcpu(this.host, this.fd, index));
    } catch (error) {
      this.fd ??= -1;
      this.close();
      if (error instanceof SnowflockError) throw error;
      throw new SnowflockError(
        "KVM_UNAVAILABLE",
        `cannot create a KVM virtual machine: ${(error as Error).message}`,
        "check `dmesg` for KVM errors",
        { cause: error },
      );
    }
  }

  captureDevices(): DeviceState {
    const chip = (id: number) => {
      const buffer = new StructView(abi.kvm_irqchip).set("chip_id", id);
      ioctl(this.fd, abi.KVM_GET_IRQCHIP, buffer.bytes, "KVM_GET_IRQCHIP");
      return buffer.bytes;
    };
    const pit = new Uint8Array(abi.kvm_pit_state2.size);
    ioctl(this.fd, abi.KVM_GET_PIT2, pit, "KVM_GET_PIT2");
    const clock = new Uint8Array(abi.kvm_clock_data.size);
    ioctl(this.fd, abi.KVM_GET_CLOCK, clock, "KVM_GET_CLOCK");
    return {
      picMaster: chip(abi.KVM_IRQCHIP_PIC_MASTER),
      picSlave: chip(abi.KVM_IRQCHIP_PIC_SLAVE),
      ioapic: chip(abi.KVM_IRQCHIP_IOAPIC),
      pit,
      clock,
    };
  }

  restoreDevices(state: DeviceState): void {
    for (const chip of [state.picMaster, state.picSlave, state.ioapic]) ioctl(this.fd, abi.KVM_SET_IRQCHIP, chip, "KVM_SET_IRQCHIP");
    ioctl(this.fd, abi.KVM_SET_PIT2, state.pit, "KVM_SET_PIT2");
    // Only the clock value goes back; the flags from GET are not valid input to SET.
    const clock = new StructView(abi.kvm_clock_data).set("clock", new StructView(abi.kvm_clock_data, state.clock).get64("clock"));
    ioctl(this.fd, abi.KVM_SET_CLOCK, clock.bytes, "KVM_SET_CLOCK");
  }

  close(): void {
    for (const v of this.vcpus) closeVcpu(this.host, v);
    this.vcpus.length = 0;
    if (this.fd >= 0) close(this.fd);
  }
}

/** A VM with its interrupt controllers and PIT, and no memory yet. */
function createVmFd(host: KvmHost): number {
  // A signal (a profiler's, say) can interrupt the creation; nothing is made then, so it is made again.
  const fd = ioctlRestarting(host.fd, abi.KVM_CREATE_VM, 0, "KVM_CREATE_VM");
  try {
    ioctl(fd, abi.KVM_SET_TSS_ADDR, TSS_ADDRESS, "KVM_SET_TSS_ADDR");
    ioctl(fd, abi.KVM_SET_IDENTITY_MAP_ADDR, new BigUint64Array([BigInt(IDENTITY_MAP_ADDRESS)]), "KVM_SET_IDENTITY_MAP_ADDR");
    ioctl(fd, abi.KVM_CREATE_IRQCHIP, 0, "KVM_CREATE_IRQCHIP");
    // SPEAKER_DUMMY puts port 0x61 (PIT channel 2 gate and output) in the kernel too.
    const pit = new StructView(abi.kvm_pit_config).set("flags", abi.KVM_PIT_SPEAKER_DUMMY);
    ioctl(fd, abi.KVM_CREATE_PIT2, pit.bytes, "KVM_CREATE_PIT2");
    return fd;
  } catch (error) {
    close(fd);
    throw error;
  }
}

function createVcpu(host: KvmHost, vmFd: number, index: number): VcpuHandle {
  const fd = ioctlRestarting(vmFd, abi.KVM_CREATE_VCPU, index, "KVM_CREATE_VCPU");
  try {
    ioctl(fd, abi.KVM_SET_CPUID2, vcpuCpuid(supportedCpuid(host), index), "KVM_SET_CPUID2");
    return { index, fd, runAddress: mmap(0, host.vcpuMmapSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) };
  } catch (error) {
    close(fd);
    throw error;
  }
}

function closeVcpu(host: KvmHost, vcpu: VcpuHandle): void {
  munmap(vcpu.runAddress, host.vcpuMmapSize);
  close(vcpu.fd);
}

/** A VM made ahead of its machine (a ready VMM's: pool/), which the next KvmVm takes. */
let spareVm: { fd: number; vcpus: VcpuHandle[] } | undefined;

/** Makes the VM and `vcpuCount` vCPUs now; the next machine built in this process only adds its memory (and any further vCPUs). */
export function prestartVm(vcpuCount: number): void {
  if (spareVm) return;
  const host = kvmHost();
  const fd = createVmFd(host);
  const vcpus: VcpuHandle[] = [];
  try {
    for (let index = 0; index < vcpuCount; index++) vcpus.push(createVcpu(host, fd, index));
  } catch (error) {
    for (const v of vcpus) closeVcpu(host, v);
    close(fd);
    throw error;
  }
  spareVm = { fd, vcpus };
}
