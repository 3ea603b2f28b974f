/**
 * The descriptor payload, and each backend's persisted machine state inside it, is a list of
 * sections: u16 type, u16 reserved (0), u32 length, bytes. The reader checks every length against
 * what is left, so no field can point outside the input. Whatever does not fit is refused.
 */
import { SnowflockError } from "./errors.ts";

/** Every refusal of a descriptor: one DESCRIPTOR error saying what is wrong with it. */
export function refuse(why: string, hint?: string): never {
  throw new SnowflockError("DESCRIPTOR", `not a usable VM descriptor: ${why}`, hint);
}

export class SectionWriter {
  private chunks: Uint8Array[] = [];

  add(type: number, body: Uint8Array): void {
    const header = new DataView(new ArrayBuffer(8));
    header.setUint16(0, type, true);
    header.setUint32(4, body.byteLength, true);
    this.chunks.push(new Uint8Array(header.buffer), body);
  }

  /** Sections already written elsewhere (a backend's persisted state), as they are. */
  addWritten(sections: Uint8Array): void {
    this.chunks.push(sections);
  }

  bytes(): Uint8Array {
    const out = new Uint8Array(this.chunks.reduce((n, c) => n + c.byteLength, 0));
    let at = 0;
    for (const c of this.chunks) {
      out.set(c, at);
      at += c.byteLength;
    }
    return out;
  }
}

/**
 * The sections one at a time, each header checked as it is reached: the caller judges a section's
 * type and length before it touches the body, and stops at the first it refuses — so a forged
 * payload of millions of empty sections costs one step, not millions of objects.
 */
export function* walkSections(payload: Uint8Array): Generator<{ type: number; body: Uint8Array }> {
  const v = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  let at = 0;
  while (at < payload.byteLength) {
    if (at + 8 > payload.byteLength) refuse(`section header at byte ${at} is cut off`);
    const type = v.getUint16(at, true);
    if (v.getUint16(at + 2, true) !== 0) refuse(`section header at byte ${at} has reserved bits set`);
    const length = v.getUint32(at + 4, true);
    if (at + 8 + length > payload.byteLength) refuse(`section ${type} at byte ${at} runs past the end`);
    yield { type, body: payload.subarray(at + 8, at + 8 + length) };
    at += 8 + length;
  }
}

/** Sequential reads of fixed-size fields from one section body, with bounds checks. */
export class FieldReader {
  private at = 0;
  private readonly view: DataView;
  constructor(
    private readonly body: Uint8Array,
    private readonly what: string,
  ) {
    this.view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  }

  private need(n: number): number {
    if (this.at + n > this.body.byteLength) refuse(`${this.what} section is too short`);
    const at = this.at;
    this.at += n;
    return at;
  }

  bytes(n: number): Uint8Array {
    const at = this.need(n);
    return this.body.slice(at, at + n);
  }

  u32(): number {
    return this.view.getUint32(this.need(4), true);
  }

  u64(): bigint {
    return this.view.getBigUint64(this.need(8), true);
  }

  end(): void {
    if (this.at !== this.body.byteLength) refuse(`${this.body.byteLength - this.at} unexpected bytes in the ${this.what} section`);
  }
}
