/**
 * A VM descriptor: everything a clone needs to start except bulk memory — each vCPU's state,
 * device state, the memory layout, which pages are non-zero, and the few pages a clone needs at
 * once (page tables, the pages under RIP and RSP).
 */
import { SnowflockError } from "../errors.ts";
import * as abi from "../backend/kvm/abi.ts";
import type { FreePageMap, MachineState } from "../backend/kvm/machine.ts";
import { MAX_FREE_PAGE_FRAMES } from "../guest/hypercalls.ts";
import type { DeviceState } from "../backend/kvm/vm.ts";
import type { VcpuState } from "../backend/kvm/vcpu-state.ts";
import type { RamRegion } from "../memory/layout.ts";
import { PAGE_SIZE } from "../memory/layout.ts";
import { type EnvelopeInfo, openEnvelope, sealEnvelope } from "./envelope.ts";
import { FieldReader, readSections, SectionWriter } from "./sections.ts";

export interface DescriptorMeta {
  backend: "kvm";
  name: string;
  cmdline: string;
  memorySize: number;
  regions: RamRegion[];
  createdAt: string;
  /** Set when the guest itself asked for the clone: its call block, and what clones get back. */
  cloneCall?: CloneCall;
  /** Where the guest's page allocator keeps its bitmap (SF_HC_FREE_PAGES), for the clones' own clones. */
  freePageMap?: FreePageMap;
}

/** sf_clone returns each clone's ID; sf_checkpoint_parent returns 0 in the clones. */
export interface CloneCall {
  block: number;
  returns: "clone-id" | "zero";
}

export interface Descriptor {
  meta: DescriptorMeta;
  state: MachineState;
  /** One bit per page of the backing (in backing order): set where the page may be non-zero. */
  nonZeroPages: Uint8Array;
  /** Pages sent along with the descriptor, by backing page number. */
  pages: Map<number, Uint8Array>;
  /** One bit per backing page: set where the guest's allocator had the page free at capture. */
  freePages?: Uint8Array;
}

const Section = { META: 1, VCPU: 2, DEVICES: 3, NONZERO_BITMAP: 4, PAGES: 5, FREE_BITMAP: 6 } as const;

const VCPU_FIELDS = [
  ["regs", abi.kvm_regs.size],
  ["sregs", abi.kvm_sregs.size],
  ["xsave", abi.kvm_xsave.size],
  ["xcrs", abi.kvm_xcrs.size],
  ["lapic", abi.kvm_lapic_state.size],
  ["events", abi.kvm_vcpu_events.size],
  ["debugregs", abi.kvm_debugregs.size],
] as const;

const DEVICE_FIELDS = [
  ["picMaster", abi.kvm_irqchip.size],
  ["picSlave", abi.kvm_irqchip.size],
  ["ioapic", abi.kvm_irqchip.size],
  ["pit", abi.kvm_pit_state2.size],
  ["clock", abi.kvm_clock_data.size],
] as const;

const MAX_MSRS = 256;

function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, true);
  return b;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

export function encodeDescriptor(d: Descriptor): Uint8Array {
  const w = new SectionWriter();
  w.add(Section.META, new TextEncoder().encode(JSON.stringify(d.meta)));
  d.state.vcpus.forEach((vcpu, index) => {
    const msrs = new DataView(new ArrayBuffer(vcpu.msrs.length * 16));
    vcpu.msrs.forEach((m, i) => {
      msrs.setUint32(i * 16, m.index, true);
      msrs.setBigUint64(i * 16 + 8, m.data, true);
    });
    w.add(Section.VCPU, concat([u32(index), ...VCPU_FIELDS.map(([name]) => vcpu[name]), u32(vcpu.mpState), u32(vcpu.msrs.length), new Uint8Array(msrs.buffer)]));
  });
  w.add(Section.DEVICES, concat(DEVICE_FIELDS.map(([name]) => d.state.devices[name])));
  w.add(Section.NONZERO_BITMAP, d.nonZeroPages);
  if (d.freePages) w.add(Section.FREE_BITMAP, d.freePages);
  const numbers = [...d.pages.keys()].sort((a, b) => a - b);
  const index = new DataView(new ArrayBuffer(4 + numbers.length * 8));
  index.setUint32(0, numbers.length, true);
  numbers.forEach((n, i) => index.setBigUint64(4 + i * 8, BigInt(n), true));
  w.add(Section.PAGES, concat([new Uint8Array(index.buffer), ...numbers.map((n) => d.pages.get(n)!)]));
  return sealEnvelope(w.bytes());
}

function bad(why: string): never {
  throw new SnowflockError("DESCRIPTOR", `not a usable VM descriptor: ${why}`);
}

function decodeMeta(body: Uint8Array): DescriptorMeta {
  let meta: DescriptorMeta;
  try {
    meta = JSON.parse(new TextDecoder().decode(body));
  } catch {
    bad("the metadata is not JSON");
  }
  if (meta.backend !== "kvm") bad(`backend '${String(meta.backend)}' is not one this snowflock restores`);
  if (!Number.isSafeInteger(meta.memorySize) || meta.memorySize <= 0 || meta.memorySize % PAGE_SIZE !== 0) bad("bad memory size");
  if (!Array.isArray(meta.regions) || meta.regions.some((r) => r.offset + r.size > meta.memorySize)) bad("memory regions do not fit the memory size");
  const map = meta.freePageMap;
  if (map !== undefined && !(Number.isSafeInteger(map?.address) && Number.isSafeInteger(map?.frames) && map.address >= 0 && map.frames > 0 && map.frames <= MAX_FREE_PAGE_FRAMES)) {
    bad("the free-page map is malformed");
  }
  return meta;
}

function decodeVcpu(body: Uint8Array): { index: number; vcpu: VcpuState } {
  const r = new FieldReader(body, "vCPU");
  const index = r.u32();
  const fields = Object.fromEntries(VCPU_FIELDS.map(([name, size]) => [name, r.bytes(size)])) as Record<(typeof VCPU_FIELDS)[number][0], Uint8Array>;
  const mpState = r.u32();
  const count = r.u32();
  if (count > MAX_MSRS) bad(`${count} MSRs in one vCPU is more than ${MAX_MSRS}`);
  const msrs = Array.from({ length: count }, () => {
    const msrIndex = r.u32();
    r.u32();
    return { index: msrIndex, data: r.u64() };
  });
  r.end();
  return { index, vcpu: { ...fields, mpState, msrs } };
}

export function decodeDescriptor(bytes: Uint8Array): { descriptor: Descriptor; envelope: EnvelopeInfo } {
  const { payload, info } = openEnvelope(bytes);
  let meta: DescriptorMeta | undefined;
  let devices: DeviceState | undefined;
  let nonZeroPages: Uint8Array | undefined;
  let freePages: Uint8Array | undefined;
  const vcpus: VcpuState[] = [];
  const pages = new Map<number, Uint8Array>();
  for (const { type, body } of readSections(payload)) {
    switch (type) {
      case Section.META:
        meta = decodeMeta(body);
        break;
      case Section.VCPU: {
        const { index, vcpu } = decodeVcpu(body);
        if (index !== vcpus.length) bad(`vCPU ${index} out of order`);
        vcpus.push(vcpu);
        break;
      }
      case Section.DEVICES: {
        const r = new FieldReader(body, "devices");
        devices = Object.fromEntries(DEVICE_FIELDS.map(([name, size]) => [name, r.bytes(size)])) as unknown as DeviceState;
        r.end();
        break;
      }
      case Section.NONZERO_BITMAP:
        nonZeroPages = body.slice();
        break;
      case Section.FREE_BITMAP:
        freePages = body.slice();
        break;
      case Section.PAGES: {
        const r = new FieldReader(body, "pages");
        const count = r.u32();
        const numbers = Array.from({ length: count }, () => r.u64());
        for (const n of numbers) pages.set(Number(n), r.bytes(PAGE_SIZE));
        r.end();
        break;
      }
      default:
        bad(`unknown section type ${type}`);
    }
  }
  if (!meta || !devices || !nonZeroPages || vcpus.length === 0) bad("a required section is missing");
  const pageCount = meta.memorySize / PAGE_SIZE;
  if (nonZeroPages.byteLength !== Math.ceil(pageCount / 8)) bad("the page bitmap does not match the memory size");
  if (freePages && freePages.byteLength !== nonZeroPages.byteLength) bad("the free-page bitmap does not match the memory size");
  for (const n of pages.keys()) if (n >= pageCount) bad(`page ${n} is outside guest memory`);
  return { descriptor: { meta, state: { vcpus, devices, memorySize: meta.memorySize }, nonZeroPages, pages, freePages }, envelope: info };
}
