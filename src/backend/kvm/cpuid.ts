/**
 * The CPUID table a vCPU sees: what KVM supports, KVM's own paravirtual leaves at 0x40000000 (a
 * Linux guest finds kvmclock there, and needs it: this machine has no HPET or PM timer to
 * calibrate its TSC against), snowflock's signature at 0x40000100 (how the built-in guest finds
 * the hypercall port) and each vCPU's own APIC ID.
 */
import * as abi from "./abi.ts";
import { StructView } from "../../sys/layout.ts";

export const HYPERVISOR_SIGNATURE = "SnowflockVMM";
/** guest/include/sf.h's SF_CPUID_LEAF. */
export const SNOWFLOCK_CPUID_LEAF = 0x40000100;
const KVM_CPUID_FEATURES = 0x40000001;
/**
 * The paravirtual features a guest may use: kvmclock (both MSR sets, and its stable bit), no-op
 * I/O delays, steal time, PV EOI, PV unhalt, TLB flush, IPIs and yield. Not async page faults:
 * their state is not captured, and a clone would wait for a fault its parent's host was serving.
 */
const CLONABLE_KVM_FEATURES = [0, 1, 3, 5, 6, 7, 9, 11, 13, 24].reduce((mask, bit) => mask | (1 << bit), 0) >>> 0;

export function vcpuCpuid(supported: Uint8Array, apicId: number): Uint8Array {
  const header = new DataView(supported.buffer, supported.byteOffset);
  const count = header.getUint32(0, true);
  const entries: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    const at = abi.kvm_cpuid2.size + i * abi.kvm_cpuid_entry2.size;
    const entry = supported.slice(at, at + abi.kvm_cpuid_entry2.size);
    const e = new StructView(abi.kvm_cpuid_entry2, entry);
    const fn = e.get("function");
    if (fn === KVM_CPUID_FEATURES) e.set("eax", e.get("eax") & CLONABLE_KVM_FEATURES);
    if (fn === 1) {
      e.set("ebx", (e.get("ebx") & 0x00ffffff) | (apicId << 24));
      e.set("ecx", e.get("ecx") | (1 << 31)); // "running under a hypervisor"
    }
    if (fn === 0xb || fn === 0x1f) e.set("edx", apicId);
    entries.push(entry);
  }
  const signature = new Uint8Array(abi.kvm_cpuid_entry2.size);
  const words = new DataView(new TextEncoder().encode(HYPERVISOR_SIGNATURE).buffer);
  new StructView(abi.kvm_cpuid_entry2, signature)
    .set("function", SNOWFLOCK_CPUID_LEAF)
    .set("eax", SNOWFLOCK_CPUID_LEAF)
    .set("ebx", words.getUint32(0, true))
    .set("ecx", words.getUint32(4, true))
    .set("edx", words.getUint32(8, true));
  entries.push(signature);

  const table = new Uint8Array(abi.kvm_cpuid2.size + entries.length * abi.kvm_cpuid_entry2.size);
  new DataView(table.buffer).setUint32(0, entries.length, true);
  entries.forEach((entry, i) => table.set(entry, abi.kvm_cpuid2.size + i * abi.kvm_cpuid_entry2.size));
  return table;
}
