/**
 * The base of cloning: a running VM is paused, its whole state captured, and that state (with a
 * copy of its memory) restored into a fresh VM, which then runs on to the same result as the
 * original — while the original, resumed, also finishes as if nothing happened.
 */
import { expect, test } from "bun:test";
import type { MachineEnd } from "../../src/backend/backend.ts";
import { KvmMachine } from "../../src/backend/kvm/machine.ts";
import type { KvmState } from "../../src/backend/kvm/persist.ts";
import { guestImage } from "../../src/guest/image.ts";
import { GuestMemory } from "../../src/guest-memory/guest-memory.ts";
import { dataset, sha256Hex } from "../../src/guest/dataset.ts";
import { describeKvm } from "../support/kvm.ts";
import { lean } from "../support/time.ts";
import { describeMachine } from "../../src/clone/describe.ts";
import { decodeDescriptor, encodeDescriptor } from "../../src/descriptor/format.ts";
import { PageBitmap } from "../../src/wasm/page-bitmap.ts";

const MEMORY = 256 * 1024 * 1024;

function console() {
  const lines: string[] = [];
  let notify = () => {};
  return {
    lines,
    onConsole: (line: string) => {
      lines.push(line);
      notify();
    },
    async waitFor(match: (line: string) => boolean, timeoutMs = 30_000): Promise<void> {
      const deadline = Date.now() + timeoutMs;
      while (!lines.some(match)) {
        if (Date.now() > deadline) throw new Error(`no console line matched within ${timeoutMs} ms; got ${JSON.stringify(lines)}`);
        await new Promise<void>((resolve) => {
          notify = resolve;
          setTimeout(resolve, 50);
        });
      }
    },
  };
}

describeKvm("capture and restore", () => {
  for (const vcpus of [1, 2]) {
    test(`a paused sha256 VM (${vcpus} vCPU) restored into a fresh VM prints the same digest`, async () => {
      const size = lean(96, 24) * 1024 * 1024;
      const expected = `sha256 ${sha256Hex(dataset(13n, size))}`;
      const original = console();
      const a = KvmMachine.boot(guestImage(), MEMORY, `sha256 size=${size} seed=13 smp=${vcpus}`, { vcpus, onConsole: original.onConsole });
      await a.start();
      await Bun.sleep(40);
      a.pause();
      const { state } = a.capture();
      expect(original.lines.some((l) => l.startsWith("sha256 "))).toBe(false); // captured mid-run
      expect((state as KvmState).vcpus).toHaveLength(vcpus);

      const restored = console();
      const b = KvmMachine.restore(state, GuestMemory.copyOf(a.memory), { onConsole: restored.onConsole });
      await b.start();
      a.resume();
      const [endA, endB] = await Promise.all([a.ended, b.ended]);
      expect(endA).toEqual({ kind: "exit", status: 0 } satisfies MachineEnd);
      expect(endB).toEqual({ kind: "exit", status: 0 } satisfies MachineEnd);
      expect(original.lines).toContain(expected);
      expect(restored.lines).toEqual([expected]);
    });
  }

  test("a restored serve VM carries on counting from where it was captured", async () => {
    const original = console();
    const a = KvmMachine.boot(guestImage(), 64 * 1024 * 1024, "serve smp=1", { vcpus: 1, onConsole: original.onConsole });
    await a.start();
    await original.waitFor((l) => l === "tick 3 id 0");
    a.pause();
    const lastTick = Number(/^tick (\d+)/.exec(original.lines.at(-1)!)![1]);
    const { state } = a.capture();
    const memory = GuestMemory.copyOf(a.memory);
    await a.stop();

    const restored = console();
    const b = KvmMachine.restore(state, memory, { onConsole: restored.onConsole });
    await b.start();
    await restored.waitFor((l) => l === `tick ${lastTick + 3} id 0`);
    await b.stop();
    expect(restored.lines[0]).toBe(`tick ${lastTick + 1} id 0`);
  });

  test("a VM restored from its encoded descriptor plus only the non-zero pages runs on to the same result", async () => {
    const size = lean(48, 12) * 1024 * 1024;
    const original = console();
    const a = KvmMachine.boot(guestImage(), MEMORY, `sha256 size=${size} seed=21 smp=2`, { vcpus: 2, onConsole: original.onConsole });
    await a.start();
    await Bun.sleep(30);
    a.pause();
    const bytes = encodeDescriptor(describeMachine(a, { name: "a", cmdline: "sha256" }).descriptor);
    expect(original.lines).toEqual([]); // captured mid-run
    const { descriptor } = decodeDescriptor(bytes);
    // The clone gets the included pages and the pages the bitmap calls non-zero; all else stays zero.
    const memory = GuestMemory.create(descriptor.meta.memorySize);
    using nonZero = PageBitmap.fromBytes(descriptor.nonZeroPages, memory.size / 4096);
    for (let page = nonZero.nextSet(0); page >= 0; page = nonZero.nextSet(page + 1)) {
      memory.bytes.set(a.memory.bytes.subarray(page * 4096, (page + 1) * 4096), page * 4096);
    }
    for (const [page, data] of descriptor.pages) memory.bytes.set(data, page * 4096);
    expect(nonZero.popcount()).toBeLessThan(memory.size / 4096);
    await a.stop();

    const restored = console();
    const b = KvmMachine.restore(descriptor.state, memory, { onConsole: restored.onConsole });
    await b.start();
    expect(await b.ended).toEqual({ kind: "exit", status: 0 });
    expect(restored.lines).toEqual([`sha256 ${sha256Hex(dataset(21n, size))}`]);
  });

  test("pause and resume many times does not change the result", async () => {
    const size = 32 * 1024 * 1024;
    const out = console();
    const m = KvmMachine.boot(guestImage(), MEMORY, `sha256 size=${size} seed=5 smp=2`, { vcpus: 2, onConsole: out.onConsole });
    await m.start();
    for (let i = 0; i < 20; i++) {
      await Bun.sleep(2);
      try {
        m.pause();
      } catch {
        break; // it finished first
      }
      m.resume();
    }
    expect(await m.ended).toEqual({ kind: "exit", status: 0 });
    expect(out.lines).toEqual([`sha256 ${sha256Hex(dataset(5n, size))}`]);
  });
});
