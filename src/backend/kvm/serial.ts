/**
 * The transmit side of a 16550 UART at COM1, which is all a guest console needs: writes to THR
 * are console bytes, LSR always says the transmitter is empty, other registers read back.
 */
export const COM1_BASE = 0x3f8;
export const COM1_PORTS = 8;

const THR = 0;
const IER = 1;
const IIR = 2;
const LCR = 3;
const MCR = 4;
const LSR = 5;
const MSR = 6;
const LCR_DLAB = 0x80;
const LSR_IDLE = 0x60; // THR empty, transmitter empty
const IIR_NO_INTERRUPT = 0x01;

export class Serial {
  private readonly registers = new Uint8Array(8);
  private line: number[] = [];

  constructor(private readonly onLine: (text: string) => void) {}

  write(offset: number, value: number): void {
    const dlab = (this.registers[LCR]! & LCR_DLAB) !== 0;
    if (offset === THR && !dlab) this.put(value);
    else this.registers[offset] = value;
  }

  read(offset: number): number {
    switch (offset) {
      case LSR:
        return LSR_IDLE;
      case IIR:
        return IIR_NO_INTERRUPT;
      case MSR:
        return 0xb0; // CTS, DSR, DCD
      case THR:
        return (this.registers[LCR]! & LCR_DLAB) !== 0 ? this.registers[THR]! : 0;
      case IER:
      case LCR:
      case MCR:
      default:
        return this.registers[offset]!;
    }
  }

  /** Bytes written by other means (the console hypercall) join the same lines. */
  put(byte: number): void {
    if (byte === 0x0a) this.emit();
    else if (byte !== 0x0d) this.line.push(byte);
    if (this.line.length >= 4096) this.emit();
  }

  /** Sends a last unterminated line, if any (when the VM stops). */
  flush(): void {
    if (this.line.length > 0) this.emit();
  }

  private emit(): void {
    this.onLine(new TextDecoder().decode(new Uint8Array(this.line)));
    this.line = [];
  }
}
