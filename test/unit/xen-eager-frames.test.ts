/**
 * The frames a Xen clone gets before it runs (src/backend/xen/persist.ts eagerFrames), read from a
 * synthetic parent: its page tables, the pages under RIP and RSP, and the per-CPU area under the
 * kernel's GS base, where Linux's resume registers its vcpu_info (which Xen never pages in).
 */
import { expect, test } from "bun:test";
import { xenReleaseAbi } from "../../src/backend/xen/abi.ts";
import { eagerFrames, type XenState } from "../../src/backend/xen/persist.ts";
import { memoryLayout, PAGE_SIZE, translate } from "../../src/guest-memory/layout.ts";
import { StructView } from "../../src/sys/layout.ts";

const abi = xenReleaseAbi(4, 17);
const FRAMES = 4096; // 16 MiB
const ram = new Uint8Array(FRAMES * PAGE_SIZE);
const memory = {
  layout: memoryLayout(ram.byteLength),
  guestRange(address: bigint, length: bigint) {
    const at = translate(this.layout, address, length);
    return at === undefined ? undefined : ram.subarray(at, at + Number(length));
  },
};
const entry = (frame: number, flags = 3n) => (BigInt(frame) << 12n) | flags;
const set = (table: number, index: number, value: bigint) =>
  new DataView(ram.buffer).setBigUint64(table * PAGE_SIZE + index * 8, value, true);
const index = (va: bigint, level: number) => Number((va >> (12n + 9n * BigInt(level - 1))) & 511n);

/** Maps virtual `va` to `frame` with 4 KiB pages under PML4 frame 1; tables come from frame 2 up. */
let nextTable = 2;
const tables = new Map<string, number>();
function map(va: bigint, frame: number): void {
  let table = 1;
  for (let level = 4; level > 1; level--) {
    const key = `${level}:${va >> (12n + 9n * BigInt(level - 1))}`;
    let next = tables.get(key);
    if (next === undefined) {
      tables.set(key, (next = nextTable++));
      set(table, index(va, level), entry(next));
    }
    table = next;
  }
  set(table, index(va, 1), entry(frame));
}

const RIP = 0xffff_ffff_8100_0000n;
const RSP = 0xffff_c900_0001_bf30n;
const GS = 0xffff_8880_07a0_0000n;
map(RIP, 1000);
map(RSP & ~0xfffn, 2000);
for (let p = 0; p < 64; p++) map(GS + BigInt(p * PAGE_SIZE), 3000 + p);

function state(gsBase: bigint, paging = true): XenState {
  const blob = new Uint8Array(abi.layouts.hvm_hw_cpu.size);
  new StructView(abi.layouts.hvm_hw_cpu, blob)
    .set("cr3", 1n << 12n)
    .set("cr0", paging ? 0x8005_0033n : 0x11n)
    .set("rip", paging ? RIP : 0x1000n)
    .set("rsp", paging ? RSP : 0x2000n)
    .set("gs_base", gsBase)
    .set("shadow_gs", 0n);
  const cpu = { typecode: abi.hvmSaveTypes.CPU, type: "CPU", instance: 0, offset: 0, length: blob.byteLength };
  return {
    backend: "xen",
    release: "4.17",
    memorySize: ram.byteLength,
    config: "{}",
    context: { blob, header: { magic: 0, version: 0, changeset: 0n, cpuid: 0, gtscKhz: 0 }, records: [cpu] },
  };
}

test("the page tables, the pages under RIP and RSP, and 64 pages of the per-CPU area under the kernel's GS base", () => {
  const frames = eagerFrames(state(GS), memory);
  expect(frames).toContain(1); // PML4
  for (const table of tables.values()) expect(frames).toContain(table);
  expect(frames).toContain(1000);
  expect(frames).toContain(2000);
  for (let p = 0; p < 64; p++) expect(frames).toContain(3000 + p);
  expect(frames).toEqual([...frames].sort((a, b) => a - b));
  expect(new Set(frames).size).toBe(frames.length);
});

test("a user-space GS base is not followed, and without paging RIP and RSP are physical", () => {
  const user = eagerFrames(state(0x7fff_0000_0000n), memory);
  expect(user).not.toContain(3000);
  expect(eagerFrames(state(0n, false), memory)).toEqual([1, 2]);
});

test("wild page-table entries and addresses beyond RAM are skipped, never read", () => {
  set(1, index(0xffff_9000_0000_0000n, 4), entry(FRAMES + 100)); // a table beyond RAM
  const frames = eagerFrames(state(0xffff_9000_0000_0000n), memory);
  expect(frames.every((f) => f < FRAMES)).toBe(true);
});
