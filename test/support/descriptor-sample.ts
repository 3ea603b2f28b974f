/** A small, valid VM descriptor (64 MiB, two vCPUs, two pages sent along) for descriptor tests to forge variants of. */
import { expect } from "bun:test";
import * as abi from "../../src/backend/kvm/abi.ts";
import type { KvmState } from "../../src/backend/kvm/persist.ts";
import { decodeDescriptor, type Descriptor } from "../../src/descriptor/format.ts";
import { SnowflockError } from "../../src/errors.ts";
import { memoryLayout } from "../../src/guest-memory/layout.ts";

export const random = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 131 + seed * 7) & 0xff);

export function sampleVcpu(seed: number) {
  return {
    regs: random(abi.kvm_regs.size, seed),
    sregs: random(abi.kvm_sregs.size, seed + 1),
    xsave: random(abi.kvm_xsave.size, seed + 2),
    xcrs: random(abi.kvm_xcrs.size, seed + 3),
    lapic: random(abi.kvm_lapic_state.size, seed + 4),
    events: random(abi.kvm_vcpu_events.size, seed + 5),
    debugregs: random(abi.kvm_debugregs.size, seed + 6),
    mpState: seed % 4,
    msrs: [
      { index: 0x10, data: 123456789n + BigInt(seed) },
      { index: 0xc0000082, data: 0xffffffff81000000n },
    ],
  };
}

/** A descriptor of a KVM machine (its state typed as KVM's, for tests that change it). */
export function sampleDescriptor(): Descriptor & { state: KvmState } {
  const memorySize = 64 * 1024 * 1024;
  const nonZeroPages = new Uint8Array(memorySize / 4096 / 8);
  nonZeroPages[0] = 0b1011;
  return {
    meta: {
      backend: "kvm",
      name: "t",
      cmdline: "serve",
      memorySize,
      regions: memoryLayout(memorySize).regions,
      createdAt: "2026-11-25T00:00:00.000Z",
    },
    state: {
      backend: "kvm",
      memorySize,
      vcpus: [sampleVcpu(1), sampleVcpu(2)],
      devices: {
        picMaster: random(abi.kvm_irqchip.size, 9),
        picSlave: random(abi.kvm_irqchip.size, 10),
        ioapic: random(abi.kvm_irqchip.size, 11),
        pit: random(abi.kvm_pit_state2.size, 12),
        clock: random(abi.kvm_clock_data.size, 13),
      },
    },
    nonZeroPages,
    pages: new Map([
      [0, random(4096, 20)],
      [3, random(4096, 21)],
    ]),
  };
}

/** The one-line DESCRIPTOR error decoding `bytes` gives; fails the test if it is accepted or fails otherwise. */
export function refusal(bytes: Uint8Array): string {
  try {
    decodeDescriptor(bytes);
  } catch (error) {
    expect(error).toBeInstanceOf(SnowflockError);
    expect((error as SnowflockError).code).toBe("DESCRIPTOR");
    return (error as SnowflockError).render();
  }
  throw new Error("the descriptor was accepted");
}
