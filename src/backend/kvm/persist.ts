/**
 * A KVM machine's state as it travels in a descriptor: one section per vCPU (its registers,
 * FPU, LAPIC, events, debug registers, mp_state and MSRs), one for the in-kernel devices, one for
 * COM1 (absent in descriptors from before the UART was kept). Each
 * size comes from the ioctl structs, so the largest state is known before anything is decoded;
 * every field is checked while it is read.
 */
import type { GuestMemory } from "../../guest-memory/guest-memory.ts";
import { FieldReader, refuse, SectionWriter } from "../../sections.ts";
import { StructView } from "../../sys/layout.ts";
import { type CapturedMachine, MAX_VCPUS, type StatePersist, type VcpuSummary } from "../backend.ts";
import * as abi from "./abi.ts";
import { backingPage, pageTablePages, virtualToPhysical } from "../../guest-memory/page-walk.ts";
import type { MsrValue, VcpuState } from "./vcpu-state.ts";
import type { DeviceState } from "./vm.ts";
import { checkSerialState, MAX_SERIAL_STATE_BYTES } from "./serial.ts";
import { decodeVirtioSection, encodeVirtioSection, MAX_VIRTIO_SECTION_BYTES, type VirtioDeviceState } from "./virtio/persist.ts";
import { concatBytes } from "../../bytes.ts";

export interface KvmState {
  backend: "kvm";
  vcpus: VcpuState[];
  devices: DeviceState;
  /** COM1 as serial.ts captures it. */
  serial?: Uint8Array;
  /** The virtio devices: each one's image or bridge and MAC, and its transport's registers (virtio/mmio.ts). */
  virtio?: VirtioDeviceState[];
  memorySize: number;
}

/** Section types of the descriptor that hold KVM state (2 and 3 since the first descriptors; 8 for COM1, 9 for virtio). */
const Section = { VCPU: 2, DEVICES: 3, SERIAL: 8, VIRTIO: 9 } as const;
const MAX_MSRS = 256;

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

const SECTION_HEADER = 8;
/** A vCPU section: index, the fixed-size states, mp_state, MSR count, then 16 bytes per MSR. */
const VCPU_FIXED_BYTES = 12 + VCPU_FIELDS.reduce((n, [, size]) => n + size, 0);
const DEVICE_BYTES = DEVICE_FIELDS.reduce((n, [, size]) => n + size, 0);

function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, true);
  return b;
}

function encodeMsrs(msrs: MsrValue[]): Uint8Array {
  const view = new DataView(new ArrayBuffer(msrs.length * 16));
  msrs.forEach((m, i) => {
    view.setUint32(i * 16, m.index, true);
    view.setBigUint64(i * 16 + 8, m.data, true);
  });
  return new Uint8Array(view.buffer);
}

function decodeVcpu(body: Uint8Array): { index: number; vcpu: VcpuState } {
  const msrBytes = body.byteLength - VCPU_FIXED_BYTES;
  if (msrBytes < 0 || msrBytes % 16 !== 0 || msrBytes > 16 * MAX_MSRS)
    refuse(`a vCPU section of ${body.byteLength} bytes does not fit the layout`);
  const r = new FieldReader(body, "vCPU");
  const index = r.u32();
  const fields = Object.fromEntries(VCPU_FIELDS.map(([name, size]) => [name, r.bytes(size)])) as Record<
    (typeof VCPU_FIELDS)[number][0],
    Uint8Array
  >;
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

/** A machine's state with every register and device zeroed: nothing runs from it; it exercises the descriptor's code ahead (pool/). */
export function blankKvmState(memorySize: number, vcpuCount: number): KvmState {
  const zero = (size: number) => new Uint8Array(size);
  const vcpu = (): VcpuState =>
    ({
      ...Object.fromEntries(VCPU_FIELDS.map(([name, size]) => [name, zero(size)])),
      mpState: 0,
      msrs: [{ index: 0x10, data: 0n }],
    }) as VcpuState;
  return {
    backend: "kvm",
    memorySize,
    vcpus: Array.from({ length: vcpuCount }, vcpu),
    devices: Object.fromEntries(DEVICE_FIELDS.map(([name, size]) => [name, zero(size)])) as unknown as DeviceState,
  };
}

function asKvm(state: { backend: string }): KvmState {
  if (state.backend !== "kvm") refuse(`a ${state.backend} machine state given to the KVM backend`);
  return state as KvmState;
}

export const kvmPersist: StatePersist = {
  sectionTypes: new Set(Object.values(Section)),
  maxBytes:
    MAX_VCPUS * (SECTION_HEADER + VCPU_FIXED_BYTES + 16 * MAX_MSRS) +
    SECTION_HEADER +
    DEVICE_BYTES +
    SECTION_HEADER +
    MAX_SERIAL_STATE_BYTES +
    SECTION_HEADER +
    MAX_VIRTIO_SECTION_BYTES,

  encode(state) {
    const { vcpus, devices, serial, virtio } = asKvm(state);
    const w = new SectionWriter();
    vcpus.forEach((vcpu, index) => {
      w.add(
        Section.VCPU,
        concatBytes([
          u32(index),
          ...VCPU_FIELDS.map(([name]) => vcpu[name]),
          u32(vcpu.mpState),
          u32(vcpu.msrs.length),
          encodeMsrs(vcpu.msrs),
        ]),
      );
    });
    w.add(Section.DEVICES, concatBytes(DEVICE_FIELDS.map(([name]) => devices[name])));
    if (serial) w.add(Section.SERIAL, serial);
    if (virtio?.length) w.add(Section.VIRTIO, encodeVirtioSection(virtio));
    return w.bytes();
  },

  decoder(memorySize) {
    const vcpus: VcpuState[] = [];
    let devices: DeviceState | undefined;
    let serial: Uint8Array | undefined;
    let virtio: VirtioDeviceState[] | undefined;
    return {
      take(type, body) {
        if (type === Section.VIRTIO) {
          if (virtio) refuse("the virtio section appears twice");
          virtio = decodeVirtioSection(body);
          return;
        }
        if (type === Section.SERIAL) {
          if (serial) refuse("the UART section appears twice");
          checkSerialState(body);
          serial = body;
          return;
        }
        if (type === Section.VCPU) {
          if (vcpus.length === MAX_VCPUS) refuse(`more than ${MAX_VCPUS} vCPUs`);
          const { index, vcpu } = decodeVcpu(body);
          if (index !== vcpus.length) refuse(`vCPU ${index} out of order`);
          vcpus.push(vcpu);
          return;
        }
        if (devices) refuse("the devices section appears twice");
        if (body.byteLength !== DEVICE_BYTES)
          refuse(`the devices section does not match the layout: ${body.byteLength} bytes where ${DEVICE_BYTES} belong`);
        const r = new FieldReader(body, "devices");
        devices = Object.fromEntries(DEVICE_FIELDS.map(([field, size]) => [field, r.bytes(size)])) as unknown as DeviceState;
      },
      finish() {
        if (!devices || vcpus.length === 0) refuse("a required section is missing");
        const state: KvmState = {
          backend: "kvm",
          vcpus,
          devices,
          memorySize,
          ...(serial ? { serial } : {}),
          ...(virtio ? { virtio } : {}),
        };
        return state;
      },
    };
  },

  summary(state): VcpuSummary[] {
    return asKvm(state).vcpus.map((v, index) => {
      const regs = new StructView(abi.kvm_regs, v.regs);
      return {
        index,
        rip: `0x${regs.get64("rip").toString(16)}`,
        rsp: `0x${regs.get64("rsp").toString(16)}`,
        mpState: v.mpState,
        msrs: v.msrs.length,
      };
    });
  },
};

/** The backing pages a clone touches first: each vCPU's page tables and the pages under its RIP and RSP. */
export function eagerPages(state: KvmState, memory: GuestMemory): CapturedMachine["eagerPages"] {
  const eager = new Set<number>();
  for (const vcpu of state.vcpus) {
    const sregs = new StructView(abi.kvm_sregs, vcpu.sregs);
    const regs = new StructView(abi.kvm_regs, vcpu.regs);
    const cr3 = sregs.get64("cr3");
    const paging = (sregs.get64("cr0") & (1n << 31n)) !== 0n;
    const tablePages = paging ? pageTablePages(memory, cr3) : [];
    const addresses = [regs.get64("rip"), regs.get64("rsp")].map((va) => (paging ? virtualToPhysical(memory, cr3, va) : va));
    for (const address of [...tablePages, ...addresses]) {
      const page = address === undefined ? undefined : backingPage(memory, address);
      if (page !== undefined) eager.add(page);
    }
  }
  return [...eager];
}
