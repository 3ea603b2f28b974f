/**
 * The guest-facing hypercall handler takes wild pointers and lengths from an untrusted guest:
 * each bad call fails with an error code, nothing outside guest RAM is read or written, and
 * later good calls still work.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { CALL_BLOCK_SIZE, GuestError, handleHypercall, Hypercall, type HypercallHost } from "../../src/guest/hypercalls.ts";
import { GuestMemory } from "../../src/guest-memory/guest-memory.ts";

const SIZE = 16 * 1024 * 1024;
const memory = GuestMemory.create(SIZE, "hypercall-test");
afterAll(() => memory.close());

function recorder() {
  const written: Uint8Array[] = [];
  const exits: Array<number | [number, string]> = [];
  const freeMaps: Array<[number, number]> = [];
  const allocations: Array<[number, number]> = [];
  const host: HypercallHost = {
    exit: (s, result) => exits.push(result === undefined ? s : [s, result]),
    consoleWrite: (b) => written.push(b),
    cloneId: () => 7,
    freePages: (address, frames) => freeMaps.push([address, frames]),
    allocated: (offset, pages) => allocations.push([offset, pages]),
  };
  return { host, written, exits, freeMaps, allocations };
}

function call(at: number, nr: number, ...args: bigint[]): ReturnType<typeof handleHypercall> & { host: ReturnType<typeof recorder> } {
  const block = new DataView(memory.bytes.buffer, memory.bytes.byteOffset + at, CALL_BLOCK_SIZE);
  block.setUint32(0, nr, true);
  block.setUint32(4, 0, true);
  args.forEach((a, i) => block.setBigUint64(8 + i * 8, BigInt.asUintN(64, a), true));
  block.setBigInt64(56, GuestError.ENOSYS, true);
  const host = recorder();
  return { ...handleHypercall(memory, at, host.host), host };
}

const resultAt = (at: number) => new DataView(memory.bytes.buffer, memory.bytes.byteOffset + at + 56, 8).getBigInt64(0, true);

describe("hypercall handler", () => {
  const BLOCK = 0x8000;
  const TEXT = 0x9000;
  memory.bytes.set(new TextEncoder().encode("hello"), TEXT);

  test("a good console write reaches the console and returns its length", () => {
    const r = call(BLOCK, Hypercall.CONSOLE_WRITE, BigInt(TEXT), 5n);
    expect(r).toMatchObject({ kind: "done", result: 5n });
    expect(new TextDecoder().decode(r.host.written[0])).toBe("hello");
    expect(resultAt(BLOCK)).toBe(5n);
  });

  const wild: Array<[string, bigint, bigint, bigint]> = [
    ["address past the end of RAM", BigInt(SIZE), 1n, GuestError.EFAULT],
    ["range that runs past the end", BigInt(SIZE - 2), 4n, GuestError.EFAULT],
    ["address + length wrapping past 2^64", (1n << 64n) - 16n, 32n, GuestError.EFAULT],
    ["address near 2^64", (1n << 64n) - 1n, 1n, GuestError.EFAULT],
    ["huge length", BigInt(TEXT), 0x7fffffffffffffffn, GuestError.E2BIG],
    ["length just over the limit", BigInt(TEXT), 65537n, GuestError.E2BIG],
    ["address in the 3-4 GiB hole", 0xfee00000n, 16n, GuestError.EFAULT],
  ];
  for (const [name, address, length, expected] of wild) {
    test(`console write with ${name} fails with ${expected}`, () => {
      const r = call(BLOCK, Hypercall.CONSOLE_WRITE, address, length);
      expect(r).toMatchObject({ kind: "done", result: expected });
      expect(r.host.written).toHaveLength(0);
      expect(resultAt(BLOCK)).toBe(expected);
    });
  }

  test("an unknown call number fails with ENOSYS", () => {
    expect(call(BLOCK, 999)).toMatchObject({ kind: "done", result: GuestError.ENOSYS });
    expect(call(BLOCK, 0)).toMatchObject({ kind: "done", result: GuestError.ENOSYS });
  });

  test("unusable call blocks are refused without touching guest memory", () => {
    const before = memory.bytes.slice(0, 0x10000);
    for (const address of [BLOCK + 1, BLOCK + 4, SIZE - 8, SIZE, 0xffffffff, 0xfee00000]) {
      expect(handleHypercall(memory, address, recorder().host)).toEqual({ kind: "bad-block", address });
    }
    expect(memory.bytes.slice(0, 0x10000)).toEqual(before);
  });

  test("the last block that fits at the end of RAM works", () => {
    const at = SIZE - CALL_BLOCK_SIZE;
    expect(call(at, Hypercall.ABI_VERSION)).toMatchObject({ kind: "done", result: 1n });
  });

  test("exit and clone id reach the host", () => {
    const r = call(BLOCK, Hypercall.EXIT, 0x1_03n);
    expect(r.host.exits).toEqual([3]);
    expect(call(BLOCK, Hypercall.CLONE_ID)).toMatchObject({ result: 7n });
  });

  test("exit with a result for the parent's join; a bad result fails the call and the VM goes on", () => {
    const RESULT = 0xa000;
    const put = (text: string) => memory.bytes.set(new TextEncoder().encode(text), RESULT);
    put("ab12.x_+-");
    expect(call(BLOCK, Hypercall.EXIT, 0n, BigInt(RESULT), 9n).host.exits).toEqual([[0, "ab12.x_+-"]]);
    put("two words");
    for (const [address, length, expected] of [
      [BigInt(RESULT), 9n, GuestError.EINVAL],
      [BigInt(RESULT), 65n, GuestError.E2BIG],
      [BigInt(SIZE - 4), 8n, GuestError.EFAULT],
      [(1n << 64n) - 4n, 8n, GuestError.EFAULT],
    ] as const) {
      const r = call(BLOCK, Hypercall.EXIT, 1n, address, length);
      expect(r).toMatchObject({ kind: "done", result: expected });
      expect(r.host.exits).toEqual([]);
    }
  });

  test("a free-page bitmap inside guest memory is passed on; wild ones fail and reach nothing", () => {
    const good = call(BLOCK, Hypercall.FREE_PAGES, 0x10000n, BigInt(SIZE / 4096));
    expect(good).toMatchObject({ kind: "done", result: 0n });
    expect(good.host.freeMaps).toEqual([[0x10000, SIZE / 4096]]);
    for (const [address, frames, expected] of [
      [BigInt(SIZE - 8), 4096n, GuestError.EFAULT],
      [0xffff_ffff_ffff_f000n, 64n, GuestError.EFAULT],
      [0x10000n, 0n, GuestError.EINVAL],
      [0x10000n, 1n << 40n, GuestError.EINVAL],
    ] as const) {
      const r = call(BLOCK, Hypercall.FREE_PAGES, address, frames);
      expect(r).toMatchObject({ kind: "done", result: expected });
      expect(r.host.freeMaps).toEqual([]);
    }
  });

  test("allocation hints inside guest memory are taken; unaligned, empty, huge or outside ones are refused", () => {
    const good = call(BLOCK, Hypercall.ALLOCATED, 0x200000n, 16n);
    expect(good).toMatchObject({ kind: "done", result: 0n });
    expect(good.host.allocations).toEqual([[0x200000, 16]]);
    for (const [address, pages, expected] of [
      [0x200800n, 1n, GuestError.EINVAL],
      [0x200000n, 0n, GuestError.EINVAL],
      [0x200000n, 1n << 40n, GuestError.EINVAL],
      [BigInt(SIZE - 4096), 2n, GuestError.EFAULT],
      [0xffff_ffff_ffff_f000n, 1n, GuestError.EFAULT],
    ] as const) {
      const r = call(BLOCK, Hypercall.ALLOCATED, address, pages);
      expect(r).toMatchObject({ kind: "done", result: expected });
      expect(r.host.allocations).toEqual([]);
    }
  });

  test("good calls still work after every bad one", () => {
    expect(call(BLOCK, Hypercall.CONSOLE_WRITE, BigInt(TEXT), 5n)).toMatchObject({ kind: "done", result: 5n });
  });
});

describe("cluster calls", () => {
  test("are handed to the VMM with their arguments; unknown numbers above them fail", () => {
    expect(call(0x8000, 17, 5n, 0n, 0n, 0n, 0n, 0n)).toMatchObject({ kind: "deferred", nr: 17, args: [5n, 0n, 0n, 0n, 0n, 0n] });
    expect(call(0x8000, 16 + 64)).toMatchObject({ kind: "done", result: GuestError.ENOSYS });
  });
});
