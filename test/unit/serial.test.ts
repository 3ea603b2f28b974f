import { describe, expect, test } from "bun:test";
import { Serial } from "../../src/backend/kvm/serial.ts";

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
