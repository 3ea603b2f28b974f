/**
 * Capture and restore of one vCPU's complete architectural state, as raw KVM structs. The order
 * of the restore follows what KVM needs: CPUID before MSRs, SREGS (APIC base) before the LAPIC,
 * events and MP state last.
 */
import { ioctl } from "../../sys/ioctl.ts";
import * as abi from "./abi.ts";

export interface MsrValue {
  index: number;
  data: bigint;
}

export interface VcpuState {
  regs: Uint8Array;
  sregs: Uint8Array;
  xsave: Uint8Array;
  xcrs: Uint8Array;
  msrs: MsrValue[];
  lapic: Uint8Array;
  events: Uint8Array;
  debugregs: Uint8Array;
  mpState: number;
}

/**
 * MSRs a guest can change and a restore must carry: TSC, SYSENTER, PAT, MISC_ENABLE, TSC_ADJUST,
 * TSC deadline, SYSCALL targets, kernel GS base, TSC_AUX, and KVM's paravirtual clock MSRs.
 * The list is intersected with what this host's KVM reports it can save.
 */
const SAVED_MSRS = [
  0x10, 0x3b, 0x174, 0x175, 0x176, 0x1a0, 0x277, 0x6e0, 0xc0000081, 0xc0000082, 0xc0000083, 0xc0000084, 0xc0000102, 0xc0000103, 0x4b564d00,
  0x4b564d01, 0x4b564d02, 0x4b564d03, 0x4b564d04,
];

export function savedMsrIndices(supported: Set<number>): number[] {
  return SAVED_MSRS.filter((index) => supported.has(index));
}

function get(fd: number, request: number, layout: { size: number }, name: string): Uint8Array {
  const buffer = new Uint8Array(layout.size);
  ioctl(fd, request, buffer, name);
  return buffer;
}

function getMsrs(fd: number, indices: number[]): MsrValue[] {
  const buffer = new DataView(new ArrayBuffer(abi.kvm_msrs.size + indices.length * abi.kvm_msr_entry.size));
  buffer.setUint32(0, indices.length, true);
  indices.forEach((index, i) => buffer.setUint32(abi.kvm_msrs.size + i * abi.kvm_msr_entry.size, index, true));
  const read = ioctl(fd, abi.KVM_GET_MSRS, buffer, "KVM_GET_MSRS");
  return indices.slice(0, read).map((index, i) => ({
    index,
    data: buffer.getBigUint64(abi.kvm_msrs.size + i * abi.kvm_msr_entry.size + abi.kvm_msr_entry.fields.data.offset, true),
  }));
}

function setMsrs(fd: number, msrs: MsrValue[]): void {
  const buffer = new DataView(new ArrayBuffer(abi.kvm_msrs.size + msrs.length * abi.kvm_msr_entry.size));
  buffer.setUint32(0, msrs.length, true);
  msrs.forEach((msr, i) => {
    const at = abi.kvm_msrs.size + i * abi.kvm_msr_entry.size;
    buffer.setUint32(at, msr.index, true);
    buffer.setBigUint64(at + abi.kvm_msr_entry.fields.data.offset, msr.data, true);
  });
  const written = ioctl(fd, abi.KVM_SET_MSRS, buffer, "KVM_SET_MSRS");
  if (written !== msrs.length) {
    throw new Error(`KVM_SET_MSRS set ${written} of ${msrs.length} MSRs; MSR 0x${msrs[written]?.index.toString(16)} was refused`);
  }
}

/** Reads the whole state of a vCPU that is not running. */
export function captureVcpu(fd: number, msrIndices: number[]): VcpuState {
  const mp = get(fd, abi.KVM_GET_MP_STATE, abi.kvm_mp_state, "KVM_GET_MP_STATE");
  return {
    regs: get(fd, abi.KVM_GET_REGS, abi.kvm_regs, "KVM_GET_REGS"),
    sregs: get(fd, abi.KVM_GET_SREGS, abi.kvm_sregs, "KVM_GET_SREGS"),
    xsave: get(fd, abi.KVM_GET_XSAVE, abi.kvm_xsave, "KVM_GET_XSAVE"),
    xcrs: get(fd, abi.KVM_GET_XCRS, abi.kvm_xcrs, "KVM_GET_XCRS"),
    msrs: getMsrs(fd, msrIndices),
    lapic: get(fd, abi.KVM_GET_LAPIC, abi.kvm_lapic_state, "KVM_GET_LAPIC"),
    events: get(fd, abi.KVM_GET_VCPU_EVENTS, abi.kvm_vcpu_events, "KVM_GET_VCPU_EVENTS"),
    debugregs: get(fd, abi.KVM_GET_DEBUGREGS, abi.kvm_debugregs, "KVM_GET_DEBUGREGS"),
    mpState: new DataView(mp.buffer).getUint32(0, true),
  };
}

/** Writes a captured state into a fresh vCPU whose CPUID is already set. */
export function restoreVcpu(fd: number, state: VcpuState): void {
  ioctl(fd, abi.KVM_SET_SREGS, state.sregs, "KVM_SET_SREGS");
  setMsrs(fd, state.msrs);
  ioctl(fd, abi.KVM_SET_REGS, state.regs, "KVM_SET_REGS");
  ioctl(fd, abi.KVM_SET_XSAVE, state.xsave, "KVM_SET_XSAVE");
  ioctl(fd, abi.KVM_SET_XCRS, state.xcrs, "KVM_SET_XCRS");
  ioctl(fd, abi.KVM_SET_DEBUGREGS, state.debugregs, "KVM_SET_DEBUGREGS");
  ioctl(fd, abi.KVM_SET_LAPIC, state.lapic, "KVM_SET_LAPIC");
  // GET reports only the SHADOW/SMM flags; ask SET to take the NMI and SIPI fields too.
  const events = state.events.slice();
  const view = new DataView(events.buffer);
  const flagsAt = abi.kvm_vcpu_events.fields.flags.offset;
  view.setUint32(flagsAt, view.getUint32(flagsAt, true) | abi.KVM_VCPUEVENT_VALID_NMI_PENDING | abi.KVM_VCPUEVENT_VALID_SIPI_VECTOR, true);
  ioctl(fd, abi.KVM_SET_VCPU_EVENTS, events, "KVM_SET_VCPU_EVENTS");
  const mp = new Uint8Array(4);
  new DataView(mp.buffer).setUint32(0, state.mpState, true);
  ioctl(fd, abi.KVM_SET_MP_STATE, mp, "KVM_SET_MP_STATE");
}
