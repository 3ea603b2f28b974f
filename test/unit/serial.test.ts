import { describe, expect, test } from "bun:test";
import * as abi from "../../src/backend/kvm/abi.ts";
import { kvmPersist } from "../../src/backend/kvm/persist.ts";
import { MAX_SERIAL_STATE_BYTES, RECEIVE_FIFO_BYTES, Serial } from "../../src/backend/kvm/serial.ts";
import { walkSections } from "../../src/sections.ts";
import type { BackendState } from "../../src/backend/backend.ts";

const IER = 1;
const IIR = 2;
const LCR = 3;
const MCR = 4;

describe("the COM1 UART", () => {
  test("console bytes become lines; a guest that only polls LSR gets no interrupt", () => {
    const lines: string[] = [];
    const levels: boolean[] = [];
    const serial = new Serial(
      (line) => lines.push(line),
      (level) => levels.push(level),
    );
    for (const c of "hello\r\nworld\n") serial.write(0, c.charCodeAt(0));
    expect(serial.read(5) & 0x60).toBe(0x60);
    expect(lines).toEqual(["hello", "world"]);
    expect(levels).toEqual([]);
    expect(serial.read(IIR)).toBe(0x01);
  });

  test("THR-empty interrupt: raised when enabled with OUT2 on, taken by reading IIR, raised again by the next byte", () => {
    const levels: boolean[] = [];
    const serial = new Serial(
      () => {},
      (level) => levels.push(level),
    );
    serial.write(IER, 0x02);
    expect(levels).toEqual([]); // OUT2 off: the line stays low
    serial.write(MCR, 0x08);
    expect(levels).toEqual([true]);
    expect(serial.read(IIR)).toBe(0x02);
    expect(levels).toEqual([true, false]);
    expect(serial.read(IIR)).toBe(0x01);
    serial.write(0, 0x41);
    expect(levels).toEqual([true, false, true]);
    serial.write(IIR, 0x01); // FCR: FIFOs on
    expect(serial.read(IIR)).toBe(0xc2);
    serial.write(IER, 0);
    expect(serial.read(IIR)).toBe(0xc1);
    expect(levels.at(-1)).toBe(false);
  });

  test("with DLAB set, offsets 0 and 1 are the divisor, not THR and IER", () => {
    const lines: string[] = [];
    const levels: boolean[] = [];
    const serial = new Serial(
      (line) => lines.push(line),
      (level) => levels.push(level),
    );
    serial.write(MCR, 0x08);
    serial.write(LCR, 0x80);
    serial.write(0, 0x0c);
    serial.write(IER, 0x02);
    expect(serial.read(0)).toBe(0x0c);
    expect(serial.read(IER)).toBe(0x02);
    serial.write(LCR, 0x03);
    expect(serial.read(IER)).toBe(0);
    serial.flush();
    expect(lines).toEqual([]);
    expect(levels).toEqual([]);
  });
});

describe("the COM1 UART's input and its state in a descriptor", () => {
  const RBR = 0;
  const LSR = 5;

  test("typed bytes wait for RBR: LSR's data-ready bit and the data-ready interrupt, which outranks THR empty", () => {
    const levels: boolean[] = [];
    const serial = new Serial(
      () => {},
      (level) => levels.push(level),
    );
    serial.write(MCR, 0x08);
    serial.write(IER, 0x01); // data ready only
    expect(serial.read(LSR) & 0x01).toBe(0);
    expect(serial.receive(new TextEncoder().encode("ls\n"))).toBe(3);
    expect(levels).toEqual([true]);
    expect(serial.read(LSR) & 0x01).toBe(1);
    serial.write(IER, 0x03);
    expect(serial.read(IIR)).toBe(0x04); // reading IIR does not take data ready
    expect(serial.read(IIR)).toBe(0x04);
    const read = [serial.read(RBR), serial.read(RBR), serial.read(RBR)];
    expect(String.fromCharCode(...read)).toBe("ls\n");
    expect(serial.read(LSR) & 0x01).toBe(0);
    expect(serial.read(IIR)).toBe(0x02); // THR empty, set when IER enabled it, now shows
    expect(serial.read(IIR)).toBe(0x01);
    expect(levels.at(-1)).toBe(false);
    expect(serial.read(RBR)).toBe(0);
  });

  test("turning the THR-empty interrupt off (output all sent) shows the line so far as partial; the newline then ends it", () => {
    const out: Array<[string, boolean]> = [];
    const serial = new Serial((text, partial) => out.push([text, partial]));
    serial.write(IER, 0x02);
    for (const c of "~ # ") serial.write(0, c.charCodeAt(0));
    serial.write(IER, 0x00);
    serial.write(IER, 0x00); // nothing new: nothing shown again
    serial.write(IER, 0x02);
    for (const c of "ls\n") serial.write(0, c.charCodeAt(0));
    serial.write(IER, 0x00);
    expect(out).toEqual([
      ["~ # ", true],
      ["~ # ls", false],
    ]);
  });

  test("the receive FIFO takes what fits and refuses the rest", () => {
    const serial = new Serial(() => {});
    expect(serial.receive(new Uint8Array(RECEIVE_FIFO_BYTES - 10))).toBe(RECEIVE_FIFO_BYTES - 10);
    expect(serial.receive(new Uint8Array(100))).toBe(10);
    expect(serial.receive(new Uint8Array(1))).toBe(0);
  });

  test("capture and restore carry registers, divisor, flags and waiting input; the restored UART raises its pending interrupt", () => {
    const parent = new Serial(() => {});
    parent.write(LCR, 0x80);
    parent.write(0, 0x01);
    parent.write(LCR, 0x03);
    parent.write(IIR, 0x01);
    parent.write(MCR, 0x0b);
    parent.write(IER, 0x01);
    parent.receive(new TextEncoder().encode("abc"));
    parent.read(RBR);
    const state = parent.capture();
    const levels: boolean[] = [];
    const clone = new Serial(
      () => {},
      (level) => levels.push(level),
    );
    clone.restore(state);
    expect(levels).toEqual([true]);
    expect(clone.capture()).toEqual(state);
    expect(String.fromCharCode(clone.read(RBR), clone.read(RBR))).toBe("bc");
    expect(clone.read(IIR)).toBe(0xc1);
    clone.write(LCR, 0x83);
    expect(clone.read(0)).toBe(0x01);
  });

  test("a KVM state's UART section round-trips; a malformed one is refused", () => {
    const serial = new Serial(() => {});
    serial.write(MCR, 0x08);
    serial.receive(new Uint8Array([1, 2, 3]));
    const state = { backend: "kvm" as const, vcpus: [], devices: fakeDevices(), memorySize: 1 << 21, serial: serial.capture() };
    const sections = [...walkSections(kvmPersist.encode(state as BackendState))];
    const serialSection = sections.find((s) => s.type === 8)!;
    expect(serialSection.body).toEqual(state.serial);
    const decoder = kvmPersist.decoder(state.memorySize);
    decoder.take(8, serialSection.body);
    expect(() => decoder.take(8, serialSection.body)).toThrow(/UART section appears twice/);
    expect(() => kvmPersist.decoder(state.memorySize).take(8, new Uint8Array(5))).toThrow(/UART section has 5 bytes/);
    const badFlags = state.serial.slice();
    badFlags[11] = 7;
    expect(() => kvmPersist.decoder(state.memorySize).take(8, badFlags)).toThrow(/flags are not 0 or 1/);
    expect(() => kvmPersist.decoder(state.memorySize).take(8, new Uint8Array(MAX_SERIAL_STATE_BYTES + 1))).toThrow(/UART section has/);
  });
});

/** In-kernel device states of the right sizes (their contents do not matter to the encoder). */
function fakeDevices() {
  return {
    picMaster: new Uint8Array(abi.kvm_irqchip.size),
    picSlave: new Uint8Array(abi.kvm_irqchip.size),
    ioapic: new Uint8Array(abi.kvm_irqchip.size),
    pit: new Uint8Array(abi.kvm_pit_state2.size),
    clock: new Uint8Array(abi.kvm_clock_data.size),
  };
}
