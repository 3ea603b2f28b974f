/**
 * The CPUID table a vCPU gets: KVM's paravirtual leaves stay (Linux finds kvmclock there) with
 * only the features a clone can carry, snowflock's signature sits at 0x40000100 where the built-in
 * guest looks (guest/include/sf.h), and each vCPU has its own APIC ID.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as abi from "../../src/backend/kvm/abi.ts";
import { HYPERVISOR_SIGNATURE, SNOWFLOCK_CPUID_LEAF, vcpuCpuid } from "../../src/backend/kvm/cpuid.ts";
import { StructView } from "../../src/sys/layout.ts";

type Leaf = { function: number; eax: number; ebx: number; ecx: number; edx: number };

function table(leaves: Leaf[]): Uint8Array {
  const bytes = new Uint8Array(abi.kvm_cpuid2.size + leaves.length * abi.kvm_cpuid_entry2.size);
  new DataView(bytes.buffer).setUint32(0, leaves.length, true);
  leaves.forEach((leaf, i) => {
    const entry = new StructView(abi.kvm_cpuid_entry2, bytes.subarray(abi.kvm_cpuid2.size + i * abi.kvm_cpuid_entry2.size));
    for (const [name, value] of Object.entries(leaf)) entry.set(name as never, value);
  });
  return bytes;
}

function leaves(bytes: Uint8Array): Leaf[] {
  const count = new DataView(bytes.buffer, bytes.byteOffset).getUint32(0, true);
  return Array.from({ length: count }, (_, i) => {
    const e = new StructView(abi.kvm_cpuid_entry2, bytes.subarray(abi.kvm_cpuid2.size + i * abi.kvm_cpuid_entry2.size));
    return { function: e.get("function"), eax: e.get("eax"), ebx: e.get("ebx"), ecx: e.get("ecx"), edx: e.get("edx") };
  });
}

describe("a vCPU's CPUID", () => {
  const kvmSignature = { function: 0x40000000, eax: 0x40000001, ebx: 0x4b4d564b, ecx: 0x564b4d56, edx: 0x4d };
  const supported = table([
    { function: 1, eax: 0x806f0, ebx: 0x00000800, ecx: 0, edx: 0 },
    kvmSignature,
    { function: 0x40000001, eax: 0xffffffff, ebx: 0, ecx: 0, edx: 0 },
  ]);
  const got = leaves(vcpuCpuid(supported, 3));

  test("KVM's leaves stay; of its features only those a clone can carry (kvmclock yes, async page faults no)", () => {
    expect(got.find((l) => l.function === 0x40000000)).toEqual(kvmSignature);
    const features = got.find((l) => l.function === 0x40000001)!.eax;
    expect(features & 0b1011).toBe(0b1011); // kvmclock, both MSR sets, no-op I/O delay
    expect(features & (1 << 24)).not.toBe(0); // the clock's stable bit
    for (const asyncPageFault of [4, 10, 14]) expect(features & (1 << asyncPageFault)).toBe(0);
  });

  test("snowflock's signature at 0x40000100, the leaf the built-in guest reads", () => {
    const leaf = got.find((l) => l.function === SNOWFLOCK_CPUID_LEAF)!;
    const text = new TextDecoder().decode(new Uint32Array([leaf.ebx, leaf.ecx, leaf.edx]));
    expect(text).toBe(HYPERVISOR_SIGNATURE);
    const header = readFileSync(join(import.meta.dir, "../../guest/include/sf.h"), "utf8");
    expect(header).toContain(`#define SF_CPUID_LEAF     0x${SNOWFLOCK_CPUID_LEAF.toString(16)}u`);
  });

  test("each vCPU its own APIC ID, and the hypervisor bit", () => {
    const leaf1 = got.find((l) => l.function === 1)!;
    expect(leaf1.ebx >>> 24).toBe(3);
    expect(leaf1.ecx >>> 31).toBe(1);
  });
});
