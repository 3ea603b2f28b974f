/**
 * The descriptor's layout: the fixed-size parts of its sections, and the stated maxima of what a
 * descriptor may describe. Every size the decoder accepts is derived from these, so the largest
 * payload is known before anything is decoded.
 */
import * as abi from "../backend/kvm/abi.ts";
import { PAGE_SIZE } from "../memory/layout.ts";

/** Most vCPUs a VM may have (`run --vcpus`); a descriptor with more is refused. */
export const MAX_VCPUS = 64;
/** The most guest memory a descriptor may describe. */
export const MAX_MEMORY_BYTES = 256 * 1024 ** 3;
/** The most the metadata JSON may take (a name, a command line, a few regions). */
export const MAX_META_BYTES = 64 * 1024;
export const MAX_MSRS = 256;
/** Pages sent along: page tables and the pages under each vCPU's RIP and RSP (a few dozen in practice). */
export const MAX_INCLUDED_PAGES = 4096;

export const VCPU_FIELDS = [
  ["regs", abi.kvm_regs.size],
  ["sregs", abi.kvm_sregs.size],
  ["xsave", abi.kvm_xsave.size],
  ["xcrs", abi.kvm_xcrs.size],
  ["lapic", abi.kvm_lapic_state.size],
  ["events", abi.kvm_vcpu_events.size],
  ["debugregs", abi.kvm_debugregs.size],
] as const;

export const DEVICE_FIELDS = [
  ["picMaster", abi.kvm_irqchip.size],
  ["picSlave", abi.kvm_irqchip.size],
  ["ioapic", abi.kvm_irqchip.size],
  ["pit", abi.kvm_pit_state2.size],
  ["clock", abi.kvm_clock_data.size],
] as const;

const SECTION_HEADER = 8;
/** A vCPU section: index, the fixed-size states, mp_state, MSR count, then 16 bytes per MSR. */
export const VCPU_FIXED_BYTES = 12 + VCPU_FIELDS.reduce((n, [, size]) => n + size, 0);
export const DEVICE_BYTES = DEVICE_FIELDS.reduce((n, [, size]) => n + size, 0);
/** A page sent along: its u64 number in the index, and the page. */
export const INCLUDED_PAGE_BYTES = 8 + PAGE_SIZE;

/** The largest payload the layout allows for this much memory: every section at its largest. */
export function maxPayloadBytes(memorySize: number): number {
  const pages = Math.ceil(memorySize / PAGE_SIZE);
  const bitmap = SECTION_HEADER + Math.ceil(pages / 8);
  const vcpus = MAX_VCPUS * (SECTION_HEADER + VCPU_FIXED_BYTES + 16 * MAX_MSRS);
  const included = SECTION_HEADER + 4 + Math.min(pages, MAX_INCLUDED_PAGES) * INCLUDED_PAGE_BYTES;
  return SECTION_HEADER + MAX_META_BYTES + vcpus + SECTION_HEADER + DEVICE_BYTES + 2 * bitmap + included;
}

/** The largest descriptor payload of all (about 33 MiB); a header announcing more is refused. */
export const MAX_PAYLOAD_BYTES = maxPayloadBytes(MAX_MEMORY_BYTES);
