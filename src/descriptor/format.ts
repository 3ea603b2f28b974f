/**
 * A VM descriptor: everything a clone needs to start except bulk memory — each vCPU's state,
 * device state, the memory layout, which pages are non-zero, and the few pages a clone needs at
 * once (page tables, the pages under RIP and RSP).
 */
import * as abi from "../backend/kvm/abi.ts";
import type { MachineState } from "../backend/kvm/machine.ts";
import type { DeviceState } from "../backend/kvm/vm.ts";
import type { VcpuState } from "../backend/kvm/vcpu-state.ts";
import { PAGE_SIZE } from "../memory/layout.ts";
import { type EnvelopeInfo, openEnvelope, sealEnvelope } from "./envelope.ts";
import {
  DEVICE_BYTES, DEVICE_FIELDS, INCLUDED_PAGE_BYTES, MAX_INCLUDED_PAGES, MAX_MSRS, MAX_VCPUS, maxPayloadBytes, VCPU_FIELDS, VCPU_FIXED_BYTES,
} from "./layout.ts";
import { decodeMeta } from "./meta.ts";
import { refuse } from "./refuse.ts";
import { FieldReader, SectionWriter, walkSections } from "./sections.ts";

/** Readers of descriptor files refuse larger ones before reading (bounded-read.ts). */
export { MAX_DESCRIPTOR_FILE_BYTES } from "./envelope.ts";

export type { CloneCall, DescriptorMeta } from "./meta.ts";
import type { DescriptorMeta } from "./meta.ts";

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
const SECTION_NAMES: Readonly<Record<number, string>> = {
  [Section.META]: "metadata",
  [Section.VCPU]: "vCPU",
  [Section.DEVICES]: "devices",
  [Section.NONZERO_BITMAP]: "page bitmap",
  [Section.PAGES]: "pages",
  [Section.FREE_BITMAP]: "free-page bitmap",
};

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

function sectionLength(body: Uint8Array, what: string, expected: number): void {
  if (body.byteLength !== expected) refuse(`the ${what} does not match the layout: ${body.byteLength} bytes where ${expected} belong`);
}

function decodeVcpu(body: Uint8Array): { index: number; vcpu: VcpuState } {
  const msrBytes = body.byteLength - VCPU_FIXED_BYTES;
  if (msrBytes < 0 || msrBytes % 16 !== 0 || msrBytes > 16 * MAX_MSRS) refuse(`a vCPU section of ${body.byteLength} bytes does not fit the layout`);
  const r = new FieldReader(body, "vCPU");
  const index = r.u32();
  const fields = Object.fromEntries(VCPU_FIELDS.map(([name, size]) => [name, r.bytes(size)])) as Record<(typeof VCPU_FIELDS)[number][0], Uint8Array>;
  const mpState = r.u32();
  if (mpState > abi.KVM_MP_STATE_SIPI_RECEIVED) refuse(`vCPU ${index} has mp_state ${mpState}, not an x86 one`);
  const count = r.u32();
  if (count * 16 !== msrBytes) refuse(`vCPU ${index} announces ${count} MSRs in room for ${msrBytes / 16}`);
  const msrs = Array.from({ length: count }, () => {
    const msrIndex = r.u32();
    if (r.u32() !== 0) refuse(`vCPU ${index} has reserved MSR bits set`);
    return { index: msrIndex, data: r.u64() };
  });
  r.end();
  return { index, vcpu: { ...fields, mpState, msrs } };
}

/**
 * Decodes and checks a descriptor while walking it: the metadata first (it fixes the memory size,
 * hence every later section's size), then each section's type, uniqueness and length before its
 * body is read. Anything else is refused with a DESCRIPTOR error.
 */
export function decodeDescriptor(bytes: Uint8Array): { descriptor: Descriptor; envelope: EnvelopeInfo } {
  const { payload, info } = openEnvelope(bytes);
  let meta: DescriptorMeta | undefined;
  let pageCount = 0;
  let devices: DeviceState | undefined;
  let nonZeroPages: Uint8Array | undefined;
  let freePages: Uint8Array | undefined;
  const vcpus: VcpuState[] = [];
  const pages = new Map<number, Uint8Array>();
  const seen = new Set<number>();
  for (const { type, body } of walkSections(payload)) {
    const name = SECTION_NAMES[type] ?? refuse(`unknown section type ${type}`);
    if (type !== Section.VCPU && seen.has(type)) refuse(`the ${name} section appears twice`);
    seen.add(type);
    if (!meta && type !== Section.META) refuse(`the ${name} section comes before the metadata`);
    switch (type) {
      case Section.META:
        meta = decodeMeta(body);
        pageCount = meta.memorySize / PAGE_SIZE;
        if (payload.byteLength > maxPayloadBytes(meta.memorySize)) refuse(`a ${payload.byteLength}-byte payload is more than ${meta.memorySize} bytes of memory need`);
        break;
      case Section.VCPU: {
        if (vcpus.length === MAX_VCPUS) refuse(`more than ${MAX_VCPUS} vCPUs`);
        const { index, vcpu } = decodeVcpu(body);
        if (index !== vcpus.length) refuse(`vCPU ${index} out of order`);
        vcpus.push(vcpu);
        break;
      }
      case Section.DEVICES: {
        sectionLength(body, name, DEVICE_BYTES);
        const r = new FieldReader(body, name);
        devices = Object.fromEntries(DEVICE_FIELDS.map(([field, size]) => [field, r.bytes(size)])) as unknown as DeviceState;
        break;
      }
      case Section.NONZERO_BITMAP:
        sectionLength(body, name, Math.ceil(pageCount / 8));
        nonZeroPages = body.slice();
        break;
      case Section.FREE_BITMAP:
        sectionLength(body, name, Math.ceil(pageCount / 8));
        freePages = body.slice();
        break;
      case Section.PAGES:
        decodePages(body, pageCount, pages);
        break;
    }
  }
  if (!meta || !devices || !nonZeroPages || vcpus.length === 0) refuse("a required section is missing");
  return { descriptor: { meta, state: { vcpus, devices, memorySize: meta.memorySize }, nonZeroPages, pages, freePages }, envelope: info };
}

/** The pages section: a count, that many page numbers (ascending, inside guest memory), the pages. */
function decodePages(body: Uint8Array, pageCount: number, pages: Map<number, Uint8Array>): void {
  const r = new FieldReader(body, "pages");
  const count = r.u32();
  if (count > Math.min(pageCount, MAX_INCLUDED_PAGES)) refuse(`${count} pages sent along, more than ${Math.min(pageCount, MAX_INCLUDED_PAGES)}`);
  sectionLength(body, "pages", 4 + count * INCLUDED_PAGE_BYTES);
  const numbers = Array.from({ length: count }, () => r.u64());
  numbers.forEach((n, i) => {
    if (n >= BigInt(pageCount)) refuse(`page ${n} is outside guest memory`);
    if (i > 0 && n <= numbers[i - 1]!) refuse(`page ${n} is sent along twice or out of order`);
  });
  for (const n of numbers) pages.set(Number(n), r.bytes(PAGE_SIZE));
}
