/**
 * The CPUID table a vCPU sees: what KVM supports, with snowflock's hypervisor signature at
 * 0x40000000 (how the guest finds the hypercall port) and each vCPU's own APIC ID.
 */
import * as abi from "./abi.ts";
import { StructView } from "../../sys/layout.ts";

export const HYPERVISOR_SIGNATURE = "SnowflockVMM";

export function vcpuCpuid(supported: Uint8Array, apicId: number): Uint8Array {
  const header = new DataView(supported.buffer, supported.byteOffset);
  const count = header.getUint32(0, true);
  const entries: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    const at = abi.kvm_cpuid2.size + i * abi.kvm_cpuid_entry2.size;
    const entry = supported.slice(at, at + abi.kvm_cpuid_entry2.size);
    const e = new StructView(abi.kvm_cpuid_entry2, entry);
    const fn = e.get("function");
    if (fn >= 0x40000000 && fn < 0x40000100) continue; // replaced by our own leaf below
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
    .set("function", 0x40000000)
    .set("eax", 0x40000000)
    .set("ebx", words.getUint32(0, true))
    .set("ecx", words.getUint32(4, true))
    .set("edx", words.getUint32(8, true));
  entries.push(signature);

  const table = new Uint8Array(abi.kvm_cpuid2.size + entries.length * abi.kvm_cpuid_entry2.size);
  new DataView(table.buffer).setUint32(0, entries.length, true);
  entries.forEach((entry, i) => table.set(entry, abi.kvm_cpuid2.size + i * abi.kvm_cpuid_entry2.size));
  return table;
}
