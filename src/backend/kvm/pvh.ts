/**
 * Booting a PVH kernel the way Xen and QEMU do: segments loaded at their physical addresses, an
 * hvm_start_info with the command line and memory map, and the BSP in flat 32-bit protected mode
 * at the PVH entry with %ebx pointing at the start info.
 */
import { SnowflockError } from "../../errors.ts";
import { ioctl } from "../../sys/ioctl.ts";
import { StructView } from "../../sys/layout.ts";
import type { KernelImage } from "../../guest/elf.ts";
import type { GuestMemory } from "../../guest-memory/guest-memory.ts";
import * as abi from "./abi.ts";
import { e820Map, LEGACY_HOLE } from "./e820.ts";

const START_INFO_ADDRESS = 0x1000;
const MEMMAP_ADDRESS = 0x1100;
const CMDLINE_ADDRESS = 0x2000;
const CMDLINE_MAX = 4095;
const HVM_START_MAGIC = 0x336ec578;

export function loadPvhKernel(memory: GuestMemory, image: KernelImage, cmdline: string): void {
  for (const s of image.segments) {
    const target = memory.guestRange(BigInt(s.physicalAddress), BigInt(s.memorySize));
    if (!target || s.physicalAddress < LEGACY_HOLE.end) {
      throw new SnowflockError(
        "GUEST_IMAGE",
        `guest segment at 0x${s.physicalAddress.toString(16)} (${s.memorySize} bytes) does not fit in ${memory.size} bytes of guest memory`,
      );
    }
    target.fill(0);
    target.set(s.data);
  }

  const cmd = new TextEncoder().encode(cmdline);
  if (cmd.byteLength > CMDLINE_MAX) throw new SnowflockError("WORKLOAD", `the guest command line is longer than ${CMDLINE_MAX} bytes`);
  const bytes = memory.bytes;
  bytes.set(cmd, CMDLINE_ADDRESS);
  bytes[CMDLINE_ADDRESS + cmd.byteLength] = 0;

  const map = e820Map(memory.layout);
  const table = new DataView(bytes.buffer, bytes.byteOffset + MEMMAP_ADDRESS, map.length * 24);
  map.forEach(({ address, size, type }, i) => {
    table.setBigUint64(i * 24, BigInt(address), true);
    table.setBigUint64(i * 24 + 8, BigInt(size), true);
    table.setUint32(i * 24 + 16, type, true);
    table.setUint32(i * 24 + 20, 0, true);
  });

  const info = new DataView(bytes.buffer, bytes.byteOffset + START_INFO_ADDRESS, 56);
  info.setUint32(0, HVM_START_MAGIC, true);
  info.setUint32(4, 1, true); // version 1: has the memory map
  info.setBigUint64(24, BigInt(CMDLINE_ADDRESS), true);
  info.setBigUint64(40, BigInt(MEMMAP_ADDRESS), true);
  info.setUint32(48, map.length, true);
}

function segment(bytes: Uint8Array, at: number, fields: { selector: number; type: number; s: number; db: number; limit: number }): void {
  const seg = new StructView(abi.kvm_segment, bytes, at);
  seg.set("base", 0).set("limit", fields.limit).set("selector", fields.selector).set("type", fields.type);
  seg
    .set("present", 1)
    .set("dpl", 0)
    .set("db", fields.db)
    .set("s", fields.s)
    .set("l", 0)
    .set("g", fields.limit > 0xfffff ? 1 : 0);
  seg.set("avl", 0).set("unusable", 0);
}

/** Puts the boot vCPU at the PVH entry: flat 32-bit protected mode, paging off, %ebx at the start info. */
export function setPvhEntryState(vcpuFd: number, entry: number): void {
  setFlat32EntryState(vcpuFd, entry, { rbx: START_INFO_ADDRESS });
}

/**
 * Flat 32-bit protected mode with paging off, code selector 0x10 and data 0x18: where both the PVH
 * entry and Linux's 32-bit boot protocol start (each kernel loads its own GDT first thing).
 */
export function setFlat32EntryState(vcpuFd: number, entry: number, registers: { rbx?: number; rsi?: number }): void {
  const sregs = new StructView(abi.kvm_sregs);
  ioctl(vcpuFd, abi.KVM_GET_SREGS, sregs.bytes, "KVM_GET_SREGS");
  const code = { selector: 0x10, type: 0xb, s: 1, db: 1, limit: 0xffffffff };
  const data = { selector: 0x18, type: 0x3, s: 1, db: 1, limit: 0xffffffff };
  segment(sregs.bytes, abi.kvm_sregs.fields.cs.offset, code);
  for (const name of ["ds", "es", "fs", "gs", "ss"] as const) segment(sregs.bytes, abi.kvm_sregs.fields[name].offset, data);
  segment(sregs.bytes, abi.kvm_sregs.fields.tr.offset, { selector: 0x20, type: 0xb, s: 0, db: 0, limit: 0x67 });
  sregs.set("cr0", 0x11).set("cr3", 0).set("cr4", 0).set("efer", 0);
  ioctl(vcpuFd, abi.KVM_SET_SREGS, sregs.bytes, "KVM_SET_SREGS");

  const regs = new StructView(abi.kvm_regs)
    .set("rip", entry)
    .set("rbx", registers.rbx ?? 0)
    .set("rsi", registers.rsi ?? 0)
    .set("rflags", 2);
  ioctl(vcpuFd, abi.KVM_SET_REGS, regs.bytes, "KVM_SET_REGS");
}
