/**
 * C struct layouts, written out by hand for the ABI modules and checked against the system's
 * headers by test/unit/*-abi.test.ts. Field names are C member designators ("io.port"), so the
 * test can ask gcc for offsetof/sizeof of each one.
 */
export type FieldType = "u8" | "u16" | "u32" | "u64" | "bytes";

export interface Field {
  offset: number;
  type: FieldType;
  /** Size in bytes; implied by type except for "bytes" (arrays, nested structs, unions). */
  size: number;
}

export interface StructLayout<F extends string = string> {
  /** The C type, e.g. "struct kvm_regs". */
  cType: string;
  size: number;
  fields: Record<F, Field>;
}

export const u8 = (offset: number): Field => ({ offset, type: "u8", size: 1 });
export const u16 = (offset: number): Field => ({ offset, type: "u16", size: 2 });
export const u32 = (offset: number): Field => ({ offset, type: "u32", size: 4 });
export const u64 = (offset: number): Field => ({ offset, type: "u64", size: 8 });
export const bytes = (offset: number, size: number): Field => ({ offset, type: "bytes", size });

export function struct<F extends string>(cType: string, size: number, fields: Record<F, Field>): StructLayout<F> {
  return { cType, size, fields };
}

/** Reads and writes the fields of one struct inside a buffer. */
export class StructView<F extends string> {
  readonly view: DataView;
  constructor(
    readonly layout: StructLayout<F>,
    readonly bytes: Uint8Array = new Uint8Array(layout.size),
    readonly base = 0,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  get(name: F): number {
    const f = this.layout.fields[name];
    const at = this.base + f.offset;
    switch (f.type) {
      case "u8":
        return this.view.getUint8(at);
      case "u16":
        return this.view.getUint16(at, true);
      case "u32":
        return this.view.getUint32(at, true);
      case "u64":
        return Number(this.view.getBigUint64(at, true));
      case "bytes":
        throw new TypeError(`${this.layout.cType}.${name} is not a scalar`);
    }
  }

  get64(name: F): bigint {
    return this.view.getBigUint64(this.base + this.layout.fields[name].offset, true);
  }

  set(name: F, value: number | bigint): this {
    const f = this.layout.fields[name];
    const at = this.base + f.offset;
    switch (f.type) {
      case "u8":
        this.view.setUint8(at, Number(value));
        break;
      case "u16":
        this.view.setUint16(at, Number(value), true);
        break;
      case "u32":
        this.view.setUint32(at, Number(value), true);
        break;
      case "u64":
        this.view.setBigUint64(at, BigInt(value), true);
        break;
      case "bytes":
        throw new TypeError(`${this.layout.cType}.${name} is not a scalar`);
    }
    return this;
  }

  slice(name: F): Uint8Array {
    const f = this.layout.fields[name];
    return this.bytes.subarray(this.base + f.offset, this.base + f.offset + f.size);
  }
}
