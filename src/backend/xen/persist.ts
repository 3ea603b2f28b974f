/**
 * A Xen PVH domain's state apart from its memory: the hypervisor's HVM context (every vCPU and
 * the emulated platform devices, one consistent blob from xc_domain_hvm_getcontext), captured from
 * a suspended parent and set into each clone, and the domain's libxl configuration, from which a
 * host builds the clones' shells. In a descriptor they are two sections: the Xen release whose
 * layouts the blob follows, then the blob, walked record by record when it is read; and the
 * configuration as JSON, checked for what a shell is built from.
 */
import { SnowflockError } from "../../errors.ts";
import { FieldReader, refuse, SectionWriter } from "../../sections.ts";
import { StructView } from "../../sys/layout.ts";
import type { BackendState, StatePersist, VcpuSummary } from "../backend.ts";
import { XEN_RELEASES, type XenReleaseAbi } from "./abi.ts";
import type { XenHost } from "./host.ts";
import { type HvmContext, parseHvmContext } from "./hvm-context.ts";
import { backingPage, pageTablePages, type PhysicalMemory, virtualToPhysical } from "../../guest-memory/page-walk.ts";

export interface XenState extends BackendState {
  backend: "xen";
  /** The Xen release whose HVM save format the context follows ("4.17"). */
  release: string;
  context: HvmContext;
  /** The domain's libxl configuration (libxl's JSON), as its clones' shells are built from it. */
  config: string;
}

/** The descriptor sections of a Xen state (types 16 and up are the Xen backend's). */
const HVM_CONTEXT_SECTION = 16;
const DOMAIN_CONFIG_SECTION = 17;
/** libxl's JSON of a PVH domU is a few KiB (one per disk and NIC at most). */
const MAX_CONFIG_BYTES = 64 * 1024;
/** An HVM context is a few KiB per vCPU (CPU, LAPIC and its registers, XSAVE, MTRRs). */
const MAX_CONTEXT_BYTES = 1024 * 1024;
const MAX_RELEASE_LENGTH = 16;

/** Reads the domain's state; the domain must be suspended or paused, so that it stands still. */
export function captureState(host: XenHost, domid: number, memorySize: number, config: string): XenState {
  return { backend: "xen", release: host.abi.release, context: host.hvmContext(domid), memorySize, config };
}

/**
 * A domain configuration as read from a descriptor: libxl's JSON object of a PVH domain with its
 * memory size. What a shell takes from it is checked again where it is built.
 */
export function checkDomainConfig(text: string, memorySize: number): string {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    refuse("the domain configuration is not JSON");
  }
  const object = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
  if (!object(value) || !object(value.c_info) || !object(value.b_info)) refuse("the domain configuration has no c_info and b_info");
  if (value.c_info.type !== "pvh") refuse(`the domain configuration is of type ${JSON.stringify(value.c_info.type)}, not pvh`);
  if (value.b_info.target_memkb !== memorySize / 1024)
    refuse(
      `the domain configuration's memory (${JSON.stringify(value.b_info.target_memkb)} KiB) is not the descriptor's ${memorySize / 1024} KiB`,
    );
  return text;
}

/** Sets `state` into a clone's domain (built with the parent's layout and not yet run). */
export function restoreState(host: XenHost, domid: number, state: XenState): void {
  if (state.release !== host.abi.release) {
    throw new SnowflockError("VM_STATE", `a state captured under Xen ${state.release} cannot be set under Xen ${host.abi.release}`);
  }
  host.setHvmContext(domid, state.context.blob);
}

function asXen(state: BackendState): XenState {
  if (state.backend !== "xen") refuse(`a ${state.backend} machine state given to the Xen backend`);
  return state as XenState;
}

function releaseAbi(release: string): XenReleaseAbi {
  return XEN_RELEASES[release] ?? refuse(`the HVM context follows Xen ${release}, whose layouts this snowflock does not have`);
}

export const xenPersist: StatePersist = {
  sectionTypes: new Set([HVM_CONTEXT_SECTION, DOMAIN_CONFIG_SECTION]),
  maxBytes: 8 + 4 + MAX_RELEASE_LENGTH + MAX_CONTEXT_BYTES + 8 + MAX_CONFIG_BYTES,

  encode(state) {
    const { release, context, config } = asXen(state);
    const name = new TextEncoder().encode(release);
    const body = new Uint8Array(4 + name.byteLength + context.blob.byteLength);
    new DataView(body.buffer).setUint32(0, name.byteLength, true);
    body.set(name, 4);
    body.set(context.blob, 4 + name.byteLength);
    const w = new SectionWriter();
    w.add(HVM_CONTEXT_SECTION, body);
    w.add(DOMAIN_CONFIG_SECTION, new TextEncoder().encode(config));
    return w.bytes();
  },

  decoder(memorySize) {
    let state: Omit<XenState, "config"> | undefined;
    let config: string | undefined;
    return {
      take(type, body) {
        if (type === DOMAIN_CONFIG_SECTION) {
          if (config !== undefined) refuse("the domain configuration section appears twice");
          if (body.byteLength > MAX_CONFIG_BYTES)
            refuse(`a domain configuration of ${body.byteLength} bytes, more than ${MAX_CONFIG_BYTES}`);
          let text: string;
          try {
            text = new TextDecoder("utf-8", { fatal: true }).decode(body);
          } catch {
            refuse("the domain configuration is not UTF-8");
          }
          config = checkDomainConfig(text, memorySize);
          return;
        }
        if (state) refuse("the HVM context section appears twice");
        const r = new FieldReader(body, "HVM context");
        const length = r.u32();
        if (length > MAX_RELEASE_LENGTH) refuse(`a Xen release name of ${length} bytes`);
        const release = new TextDecoder().decode(r.bytes(length));
        const blob = body.slice(4 + length);
        if (blob.byteLength > MAX_CONTEXT_BYTES) refuse(`an HVM context of ${blob.byteLength} bytes, more than ${MAX_CONTEXT_BYTES}`);
        let context: HvmContext;
        try {
          context = parseHvmContext(blob, releaseAbi(release));
        } catch (error) {
          if (error instanceof SnowflockError && error.code === "DESCRIPTOR") throw error;
          refuse((error as Error).message);
        }
        state = { backend: "xen", release, context, memorySize };
      },
      finish() {
        if (!state) refuse("a required section is missing: the HVM context");
        if (config === undefined) refuse("a required section is missing: the domain configuration");
        return { ...state, config };
      },
    };
  },

  summary(state): VcpuSummary[] {
    const { release, context } = asXen(state);
    const abi = releaseAbi(release);
    return context.records
      .filter((r) => r.typecode === abi.hvmSaveTypes.CPU)
      .map((r) => {
        const cpu = new StructView(abi.layouts.hvm_hw_cpu, context.blob, r.offset);
        return { index: r.instance, rip: `0x${cpu.get64("rip").toString(16)}`, rsp: `0x${cpu.get64("rsp").toString(16)}` };
      });
  },
};

/** The per-CPU area's size to bring in under each vCPU's GS base: Linux's percpu unit is 256 KiB at most here. */
const PERCPU_PAGES = 64;
const KERNEL_HALF = 0xffff_8000_0000_0000n;

/**
 * The frames a clone must have before it runs, read from the parent's frozen `memory`: each
 * vCPU's page tables and the pages under its RIP and RSP (as on KVM), and its per-CPU area (under
 * the kernel's GS base). Linux's resume registers its vcpu_info there, and Xen refuses a
 * paged-out vcpu_info page without asking the pager for it.
 */
export function eagerFrames(state: XenState, memory: PhysicalMemory): number[] {
  const abi = releaseAbi(state.release);
  const eager = new Set<number>();
  for (const r of state.context.records.filter((r) => r.typecode === abi.hvmSaveTypes.CPU)) {
    const cpu = new StructView(abi.layouts.hvm_hw_cpu, state.context.blob, r.offset);
    const cr3 = cpu.get64("cr3");
    const paging = (cpu.get64("cr0") & (1n << 31n)) !== 0n;
    const virtual = [cpu.get64("rip"), cpu.get64("rsp")];
    for (const base of [cpu.get64("gs_base"), cpu.get64("shadow_gs")].filter((b) => b >= KERNEL_HALF)) {
      for (let page = 0n; page < BigInt(PERCPU_PAGES); page++) virtual.push(base + page * 4096n);
    }
    const physical = paging ? [...pageTablePages(memory, cr3), ...virtual.map((va) => virtualToPhysical(memory, cr3, va))] : virtual;
    for (const address of physical) {
      const frame = address === undefined ? undefined : backingPage(memory, address);
      if (frame !== undefined) eager.add(frame);
    }
  }
  return [...eager].sort((a, b) => a - b);
}
