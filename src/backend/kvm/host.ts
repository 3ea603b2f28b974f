/**
 * Opening /dev/kvm and checking, once, that this host's KVM can run snowflock guests. Each failure
 * says how to fix the host, like kvmtool's capability table.
 */
import { SnowflockError } from "../../errors.ts";
import { SyscallError } from "../../sys/errno.ts";
import { O_RDWR } from "../../sys/constants.ts";
import { close, open } from "../../sys/files.ts";
import { ioctl } from "../../sys/ioctl.ts";
import * as abi from "./abi.ts";

/** The KVM device; SNOWFLOCK_KVM_DEVICE points elsewhere (e.g. a container's bind mount). */
export function kvmDevice(): string {
  return process.env.SNOWFLOCK_KVM_DEVICE || "/dev/kvm";
}

/** The capabilities snowflock relies on, and what each is for. */
export const REQUIRED_CAPABILITIES: ReadonlyArray<{ cap: number; name: string; why: string }> = [
  { cap: abi.KVM_CAP_USER_MEMORY, name: "KVM_CAP_USER_MEMORY", why: "guest memory from a memfd" },
  { cap: abi.KVM_CAP_IRQCHIP, name: "KVM_CAP_IRQCHIP", why: "in-kernel LAPIC/IOAPIC/PIC" },
  { cap: abi.KVM_CAP_PIT2, name: "KVM_CAP_PIT2", why: "in-kernel PIT the guest calibrates its clock with" },
  { cap: abi.KVM_CAP_SET_TSS_ADDR, name: "KVM_CAP_SET_TSS_ADDR", why: "x86 real-mode support" },
  { cap: abi.KVM_CAP_EXT_CPUID, name: "KVM_CAP_EXT_CPUID", why: "CPUID set-up" },
  { cap: abi.KVM_CAP_MP_STATE, name: "KVM_CAP_MP_STATE", why: "vCPU run state capture" },
  { cap: abi.KVM_CAP_VCPU_EVENTS, name: "KVM_CAP_VCPU_EVENTS", why: "pending-event capture" },
  { cap: abi.KVM_CAP_DEBUGREGS, name: "KVM_CAP_DEBUGREGS", why: "debug register capture" },
  { cap: abi.KVM_CAP_XSAVE, name: "KVM_CAP_XSAVE", why: "FPU/extended state capture" },
  { cap: abi.KVM_CAP_XCRS, name: "KVM_CAP_XCRS", why: "XCR0 capture" },
  { cap: abi.KVM_CAP_ADJUST_CLOCK, name: "KVM_CAP_ADJUST_CLOCK", why: "guest clock capture" },
  { cap: abi.KVM_CAP_IMMEDIATE_EXIT, name: "KVM_CAP_IMMEDIATE_EXIT", why: "pausing running vCPUs" },
];

export interface KvmHost {
  fd: number;
  vcpuMmapSize: number;
  /** MSR indices this KVM can save and restore. */
  msrIndices: Set<number>;
}

let cached: KvmHost | undefined;

/** Opens /dev/kvm once per thread and checks the API version and every required capability. */
export function kvmHost(): KvmHost {
  if (cached) return cached;
  const fd = openKvm();
  try {
    const version = ioctl(fd, abi.KVM_GET_API_VERSION, 0, "KVM_GET_API_VERSION");
    if (version !== abi.KVM_API_VERSION) {
      throw new SnowflockError(
        "KVM_UNAVAILABLE",
        `KVM API version ${version} is not the expected ${abi.KVM_API_VERSION}`,
        "use a Linux kernel from 2.6.22 on",
      );
    }
    const missing = REQUIRED_CAPABILITIES.filter((c) => ioctl(fd, abi.KVM_CHECK_EXTENSION, c.cap, "KVM_CHECK_EXTENSION") <= 0);
    if (missing.length > 0) {
      throw new SnowflockError(
        "KVM_UNAVAILABLE",
        `this host's KVM lacks ${missing.map((c) => `${c.name} (${c.why})`).join(", ")}`,
        "use a newer Linux kernel with KVM for x86-64 (CONFIG_KVM, kvm_intel or kvm_amd)",
      );
    }
    cached = {
      fd,
      vcpuMmapSize: ioctl(fd, abi.KVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE"),
      msrIndices: readMsrIndexList(fd),
    };
    return cached;
  } catch (error) {
    close(fd);
    throw error;
  }
}

function openKvm(): number {
  try {
    return open(kvmDevice(), O_RDWR);
  } catch (error) {
    if (!(error instanceof SyscallError)) throw error;
    const hints: Record<string, string> = {
      ENOENT: "load the kvm_intel or kvm_amd module, enable virtualization in the firmware, or run on a host with nested virtualization",
      EACCES: "run as root or add your user to the 'kvm' group",
      EPERM: "run as root or add your user to the 'kvm' group",
      ENXIO: "the kvm module is loaded but no hardware virtualization is available",
      ENODEV: "the kvm module is loaded but no hardware virtualization is available",
    };
    throw new SnowflockError(
      "KVM_UNAVAILABLE",
      `cannot open ${kvmDevice()}: ${error.errnoName}`,
      hints[error.errnoName] ?? "check that KVM works on this host",
      { cause: error },
    );
  }
}

function readMsrIndexList(fd: number): Set<number> {
  const capacity = 1024;
  const list = new Uint32Array(1 + capacity);
  list[0] = capacity;
  ioctl(fd, abi.KVM_GET_MSR_INDEX_LIST, list, "KVM_GET_MSR_INDEX_LIST");
  return new Set(list.subarray(1, 1 + list[0]!));
}

/** KVM_GET_SUPPORTED_CPUID: raw kvm_cpuid2 bytes with `nent` entries. */
export function supportedCpuid(host: KvmHost): Uint8Array {
  const capacity = 256;
  const buffer = new Uint8Array(abi.kvm_cpuid2.size + capacity * abi.kvm_cpuid_entry2.size);
  new DataView(buffer.buffer).setUint32(0, capacity, true);
  ioctl(host.fd, abi.KVM_GET_SUPPORTED_CPUID, buffer, "KVM_GET_SUPPORTED_CPUID");
  return buffer;
}

/** Whether /dev/kvm can be used here; for tests and `doctor`, never throws. */
export function kvmAvailable(): { ok: true } | { ok: false; reason: string } {
  try {
    kvmHost();
    return { ok: true };
  } catch (error) {
    return { ok: false, reason: error instanceof SnowflockError ? error.render() : String(error) };
  }
}
