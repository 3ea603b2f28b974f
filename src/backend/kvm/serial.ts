/**
 * A 16550A UART at COM1, the guest's console. Writes to THR are console bytes, sent at once, so
 * THR is always empty; bytes typed at the console wait in a receive FIFO for RBR. A guest that
 * enables the THR-empty or data-ready interrupt (Linux's serial driver works from them) gets it
 * on IRQ 4, raised through `setIrq` while pending and while MCR's OUT2 gates it on (as on a PC).
 *
 * The registers live in a SharedArrayBuffer behind a lock: every vCPU thread serves the guest's
 * accesses, and the machine's own thread feeds input and captures or restores the UART with the
 * rest of the machine.
 */
import { refuse } from "../../sections.ts";
import { setIrqLine } from "./irq-line.ts";
import { withSpinLock } from "../../spin-lock.ts";

export const COM1_BASE = 0x3f8;
export const COM1_PORTS = 8;
export const COM1_IRQ = 4;

const THR = 0; // RBR when read
const IER = 1;
const IIR = 2; // FCR when written
const LCR = 3;
const MCR = 4;
const LSR = 5;
const MSR = 6;
const LCR_DLAB = 0x80;
const LSR_DATA_READY = 0x01;
const LSR_IDLE = 0x60; // THR empty, transmitter empty
const IIR_NO_INTERRUPT = 0x01;
const IIR_THR_EMPTY = 0x02;
const IIR_DATA_READY = 0x04;
const IIR_FIFOS_ENABLED = 0xc0;
const IER_DATA_READY = 0x01;
const IER_THR_EMPTY = 0x02;
const FCR_ENABLE_FIFO = 0x01;
const MCR_OUT2 = 0x08;

/** Input bytes that wait for the guest; more is refused until it reads. */
export const RECEIVE_FIFO_BYTES = 4096;

/** Int32 slots of the shared state; the receive FIFO's bytes follow them. */
const Slot = {
  LOCK: 0,
  REGISTERS: 1, // 8 slots, one per offset
  DIVISOR: 9, // DLL, DLM
  FIFOS: 11,
  THR_EMPTY_PENDING: 12,
  IRQ_LEVEL: 13,
  /** Total bytes taken by the guest and put in by the host: their difference is what waits. */
  RX_READ: 14,
  RX_WRITTEN: 15,
  WORDS: 16,
} as const;
const RX_OFFSET = Slot.WORDS * 4;

/** The UART as a descriptor keeps it: 8 registers, the divisor, FIFO and THR-empty flags, then the waiting input. */
const CAPTURE_HEADER = 12;
export const MAX_SERIAL_STATE_BYTES = CAPTURE_HEADER + RECEIVE_FIFO_BYTES;

/** Sets IRQ 4's level on the VM. */
export function serialIrq(vmFd: number): (level: boolean) => void {
  return (level) => setIrqLine(vmFd, COM1_IRQ, level);
}

export function newSerialState(): SharedArrayBuffer {
  return new SharedArrayBuffer(RX_OFFSET + RECEIVE_FIFO_BYTES);
}

export class Serial {
  private readonly s: Int32Array;
  private readonly rx: Uint8Array;
  private line: number[] = [];

  /** How much of `line` went out already as a partial line. */
  private shown = 0;

  constructor(
    /** A console line; `partial`: the line so far, which the guest stopped at (a shell's prompt). */
    private readonly onLine: (text: string, partial: boolean) => void,
    /** Sets IRQ 4's level (absent: the UART raises no interrupt). */
    private readonly setIrq?: (level: boolean) => void,
    shared: SharedArrayBuffer = newSerialState(),
  ) {
    this.s = new Int32Array(shared, 0, Slot.WORDS);
    this.rx = new Uint8Array(shared, RX_OFFSET, RECEIVE_FIFO_BYTES);
  }

  private locked<T>(body: () => T): T {
    return withSpinLock(this.s, Slot.LOCK, body);
  }

  private register(offset: number): number {
    return this.s[Slot.REGISTERS + offset]!;
  }

  /** Whether offsets 0 and 1 are the divisor (LCR's DLAB set), not THR and IER. */
  private divisorLatched(): boolean {
    return (this.register(LCR) & LCR_DLAB) !== 0;
  }

  private waiting(): number {
    return this.s[Slot.RX_WRITTEN]! - this.s[Slot.RX_READ]!;
  }

  write(offset: number, value: number): void {
    let byte: number | undefined;
    let stopped = false;
    this.locked(() => {
      if (this.divisorLatched() && offset <= IER) this.s[Slot.DIVISOR + offset] = value;
      else if (offset === THR) {
        byte = value;
        // Sent at once: THR is empty again, which is an interrupt if enabled.
        this.s[Slot.THR_EMPTY_PENDING] = 1;
      } else if (offset === IIR) this.s[Slot.FIFOS] = value & FCR_ENABLE_FIFO;
      else {
        // Enabling the interrupt with THR empty raises it at once (as a 16550 does).
        if (offset === IER) {
          if (this.register(IER) & IER_THR_EMPTY && !(value & IER_THR_EMPTY)) stopped = true;
          this.s[Slot.THR_EMPTY_PENDING] = value & IER_THR_EMPTY ? 1 : 0;
        }
        this.s[Slot.REGISTERS + offset] = value;
      }
      this.updateIrq();
    });
    if (byte !== undefined) this.put(byte);
    // Linux's driver turns the THR-empty interrupt off when its output is all sent: what it
    // printed up to there (a prompt waiting for input) is shown without waiting for the newline.
    if (stopped && this.line.length > this.shown) {
      this.shown = this.line.length;
      this.onLine(this.text(), true);
    }
  }

  read(offset: number): number {
    return this.locked(() => {
      const value = this.readRegister(offset);
      this.updateIrq();
      return value;
    });
  }

  private readRegister(offset: number): number {
    if (this.divisorLatched() && offset <= IER) return this.s[Slot.DIVISOR + offset]!;
    switch (offset) {
      case THR: {
        if (this.waiting() === 0) return 0;
        const read = this.s[Slot.RX_READ]!;
        this.s[Slot.RX_READ] = read + 1;
        return this.rx[read % RECEIVE_FIFO_BYTES]!;
      }
      case LSR:
        return LSR_IDLE | (this.waiting() > 0 ? LSR_DATA_READY : 0);
      case IIR: {
        const fifoBits = this.s[Slot.FIFOS] ? IIR_FIFOS_ENABLED : 0;
        // Data ready outranks THR empty, and stays until the guest has read the data.
        if (this.dataReadyInterrupt()) return fifoBits | IIR_DATA_READY;
        if (!this.thrEmptyInterrupt()) return fifoBits | IIR_NO_INTERRUPT;
        this.s[Slot.THR_EMPTY_PENDING] = 0;
        return fifoBits | IIR_THR_EMPTY;
      }
      case MSR:
        return 0xb0; // CTS, DSR, DCD
      default:
        return this.register(offset);
    }
  }

  private dataReadyInterrupt(): boolean {
    return this.waiting() > 0 && (this.register(IER) & IER_DATA_READY) !== 0;
  }

  private thrEmptyInterrupt(): boolean {
    return this.s[Slot.THR_EMPTY_PENDING] === 1 && (this.register(IER) & IER_THR_EMPTY) !== 0;
  }

  private updateIrq(): void {
    const level = (this.dataReadyInterrupt() || this.thrEmptyInterrupt()) && (this.register(MCR) & MCR_OUT2) !== 0 ? 1 : 0;
    if (level === this.s[Slot.IRQ_LEVEL]) return;
    this.s[Slot.IRQ_LEVEL] = level;
    this.setIrq?.(level === 1);
  }

  /** Bytes typed at the console, for the guest to read; returns how many fit in the FIFO. */
  receive(bytes: Uint8Array): number {
    return this.locked(() => {
      const room = RECEIVE_FIFO_BYTES - this.waiting();
      const taken = Math.min(room, bytes.byteLength);
      const written = this.s[Slot.RX_WRITTEN]!;
      for (let i = 0; i < taken; i++) this.rx[(written + i) % RECEIVE_FIFO_BYTES] = bytes[i]!;
      this.s[Slot.RX_WRITTEN] = written + taken;
      this.updateIrq();
      return taken;
    });
  }

  /** The UART's state for a descriptor. Call with the guest paused. */
  capture(): Uint8Array {
    return this.locked(() => {
      const waiting = this.waiting();
      const out = new Uint8Array(CAPTURE_HEADER + waiting);
      for (let i = 0; i < 8; i++) out[i] = this.register(i);
      out[8] = this.s[Slot.DIVISOR]!;
      out[9] = this.s[Slot.DIVISOR + 1]!;
      out[10] = this.s[Slot.FIFOS]!;
      out[11] = this.s[Slot.THR_EMPTY_PENDING]!;
      const read = this.s[Slot.RX_READ]!;
      for (let i = 0; i < waiting; i++) out[CAPTURE_HEADER + i] = this.rx[(read + i) % RECEIVE_FIFO_BYTES]!;
      return out;
    });
  }

  /** Takes over a captured UART (before the guest runs), raising IRQ 4 if it was pending. */
  restore(state: Uint8Array): void {
    checkSerialState(state);
    this.locked(() => {
      for (let i = 0; i < 8; i++) this.s[Slot.REGISTERS + i] = state[i]!;
      this.s[Slot.DIVISOR] = state[8]!;
      this.s[Slot.DIVISOR + 1] = state[9]!;
      this.s[Slot.FIFOS] = state[10]!;
      this.s[Slot.THR_EMPTY_PENDING] = state[11]!;
      const waiting = state.subarray(CAPTURE_HEADER);
      this.rx.set(waiting);
      this.s[Slot.RX_READ] = 0;
      this.s[Slot.RX_WRITTEN] = waiting.byteLength;
      this.s[Slot.IRQ_LEVEL] = 0;
      this.updateIrq();
    });
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
    this.onLine(this.text(), false);
    this.line = [];
    this.shown = 0;
  }

  private text(): string {
    return new TextDecoder().decode(new Uint8Array(this.line));
  }
}

/** Refuses a captured UART that could not have come from capture(). */
export function checkSerialState(state: Uint8Array): void {
  if (state.byteLength < CAPTURE_HEADER || state.byteLength > MAX_SERIAL_STATE_BYTES)
    refuse(`the UART section has ${state.byteLength} bytes, not ${CAPTURE_HEADER} to ${MAX_SERIAL_STATE_BYTES}`);
  if (state[10]! > 1 || state[11]! > 1) refuse("the UART section's FIFO and THR-empty flags are not 0 or 1");
}
