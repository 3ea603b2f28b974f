/**
 * A 16550A UART at COM1 with only a transmit side, which is all a guest console needs: writes to
 * THR are console bytes, sent at once, so THR is always empty. A guest that enables the
 * THR-empty interrupt (Linux's serial driver writes its tty's output from that interrupt) gets it
 * on IRQ 4, raised through `setIrq` while pending and while MCR's OUT2 gates it on (as on a PC);
 * reading IIR, which then reports it, or writing THR again clears it. Other registers read back.
 */
export const COM1_BASE = 0x3f8;
export const COM1_PORTS = 8;
export const COM1_IRQ = 4;

const THR = 0;
const IER = 1;
const IIR = 2; // FCR when written
const LCR = 3;
const MCR = 4;
const LSR = 5;
const MSR = 6;
const LCR_DLAB = 0x80;
const LSR_IDLE = 0x60; // THR empty, transmitter empty
const IIR_NO_INTERRUPT = 0x01;
const IIR_THR_EMPTY = 0x02;
const IIR_FIFOS_ENABLED = 0xc0;
const IER_THR_EMPTY = 0x02;
const FCR_ENABLE_FIFO = 0x01;
const MCR_OUT2 = 0x08;

export class Serial {
  private readonly registers = new Uint8Array(8);
  /** DLL and DLM, at offsets 0 and 1 while LCR's DLAB is set. */
  private readonly divisor = new Uint8Array(2);
  private line: number[] = [];
  private fifos = false;
  /** A THR-empty interrupt not yet taken (by reading IIR). */
  private thrEmptyPending = false;
  private irqLevel = false;

  constructor(
    private readonly onLine: (text: string) => void,
    /** Sets IRQ 4's level (absent: the UART raises no interrupt). */
    private readonly setIrq?: (level: boolean) => void,
  ) {}

  /** Whether offsets 0 and 1 are the divisor (LCR's DLAB set), not THR and IER. */
  private divisorLatched(): boolean {
    return (this.registers[LCR]! & LCR_DLAB) !== 0;
  }

  write(offset: number, value: number): void {
    if (this.divisorLatched() && offset <= IER) {
      this.divisor[offset] = value;
    } else if (offset === THR) {
      this.put(value);
      // Sent at once: THR is empty again, which is an interrupt if enabled.
      this.thrEmptyPending = true;
    } else if (offset === IIR) {
      this.fifos = (value & FCR_ENABLE_FIFO) !== 0;
    } else {
      this.registers[offset] = value;
      // Enabling the interrupt with THR empty raises it at once (as a 16550 does).
      if (offset === IER) this.thrEmptyPending = (value & IER_THR_EMPTY) !== 0;
    }
    this.updateIrq();
  }

  read(offset: number): number {
    const value = this.readRegister(offset);
    this.updateIrq();
    return value;
  }

  private readRegister(offset: number): number {
    if (this.divisorLatched() && offset <= IER) return this.divisor[offset]!;
    switch (offset) {
      case LSR:
        return LSR_IDLE;
      case IIR: {
        const fifoBits = this.fifos ? IIR_FIFOS_ENABLED : 0;
        if (!this.interruptPending()) return fifoBits | IIR_NO_INTERRUPT;
        this.thrEmptyPending = false;
        return fifoBits | IIR_THR_EMPTY;
      }
      case MSR:
        return 0xb0; // CTS, DSR, DCD
      case THR:
        return 0; // nothing received
      default:
        return this.registers[offset]!;
    }
  }

  private interruptPending(): boolean {
    return this.thrEmptyPending && (this.registers[IER]! & IER_THR_EMPTY) !== 0;
  }

  private updateIrq(): void {
    const level = this.interruptPending() && (this.registers[MCR]! & MCR_OUT2) !== 0;
    if (level === this.irqLevel) return;
    this.irqLevel = level;
    this.setIrq?.(level);
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
