/**
 * Just enough of ACPI Machine Language (ACPI 6.5, chapter 20) to describe snowflock's devices in
 * a DSDT: names, integers, strings, packages, devices, scopes, methods, If/LEqual/Notify, and the
 * resource templates (fixed memory ranges, interrupts) a device's _CRS returns.
 */
import { concatBytes } from "../../../bytes.ts";

const ZERO_OP = 0x00;
const ONE_OP = 0x01;
const NAME_OP = 0x08;
const BYTE_PREFIX = 0x0a;
const WORD_PREFIX = 0x0b;
const DWORD_PREFIX = 0x0c;
const STRING_PREFIX = 0x0d;
const QWORD_PREFIX = 0x0e;
const SCOPE_OP = 0x10;
const BUFFER_OP = 0x11;
const PACKAGE_OP = 0x12;
const METHOD_OP = 0x14;
const DUAL_NAME_PREFIX = 0x2e;
const MULTI_NAME_PREFIX = 0x2f;
const ROOT_CHAR = 0x5c;
const EXT_OP_PREFIX = 0x5b;
const DEVICE_OP = 0x82;
const ARG0_OP = 0x68;
const NOTIFY_OP = 0x86;
const LEQUAL_OP = 0x93;
const IF_OP = 0xa0;

/** An encoded AML term. */
export type Aml = Uint8Array;

/** PkgLength: the length of what follows its opcode, counting its own 1 to 4 bytes. */
export function pkgLength(contentLength: number): Uint8Array {
  for (let extra = 0; extra <= 3; extra++) {
    const total = contentLength + 1 + extra;
    if (extra === 0 && total < 0x40) return Uint8Array.of(total);
    if (extra > 0 && total < 2 ** (4 + 8 * extra)) {
      const bytes = new Uint8Array(1 + extra);
      bytes[0] = (extra << 6) | (total & 0x0f);
      for (let i = 1; i <= extra; i++) bytes[i] = (total >>> (4 + 8 * (i - 1))) & 0xff;
      return bytes;
    }
  }
  throw new RangeError(`an AML package of ${contentLength} bytes is too long`);
}

function withLength(opcode: number[], body: Uint8Array): Aml {
  return concatBytes([Uint8Array.from(opcode), pkgLength(body.byteLength), body]);
}

/** A NameSeg: 4 characters of A-Z, 0-9 or _, padded with _. */
function nameSeg(seg: string): Uint8Array {
  if (!/^[A-Z_][A-Z0-9_]{0,3}$/.test(seg)) throw new RangeError(`'${seg}' is not an ACPI name segment`);
  return new TextEncoder().encode(seg.padEnd(4, "_"));
}

/** A NameString: "_SB_.VGEN", or "\\_SB_.VGEN" from the root. */
export function nameString(path: string): Aml {
  const root = path.startsWith("\\");
  const segs = (root ? path.slice(1) : path).split(".").map(nameSeg);
  const prefix = root ? [ROOT_CHAR] : [];
  if (segs.length === 1) return concatBytes([Uint8Array.from(prefix), segs[0]!]);
  if (segs.length === 2) return concatBytes([Uint8Array.from([...prefix, DUAL_NAME_PREFIX]), ...segs]);
  return concatBytes([Uint8Array.from([...prefix, MULTI_NAME_PREFIX, segs.length]), ...segs]);
}

export function integer(value: number | bigint): Aml {
  const n = BigInt(value);
  if (n < 0n || n >= 2n ** 64n) throw new RangeError(`${value} is not an AML integer`);
  if (n === 0n) return Uint8Array.of(ZERO_OP);
  if (n === 1n) return Uint8Array.of(ONE_OP);
  const sized = (prefix: number, bytes: number) => {
    const out = new Uint8Array(1 + bytes);
    out[0] = prefix;
    for (let i = 0; i < bytes; i++) out[1 + i] = Number((n >> BigInt(8 * i)) & 0xffn);
    return out;
  };
  if (n <= 0xffn) return sized(BYTE_PREFIX, 1);
  if (n <= 0xffffn) return sized(WORD_PREFIX, 2);
  if (n <= 0xffffffffn) return sized(DWORD_PREFIX, 4);
  return sized(QWORD_PREFIX, 8);
}

export function string(text: string): Aml {
  if (!/^[\x01-\x7f]*$/.test(text)) throw new RangeError("an AML string is ASCII without NUL");
  return concatBytes([Uint8Array.of(STRING_PREFIX), new TextEncoder().encode(text), Uint8Array.of(0)]);
}

/** A compressed EISA ID such as "PNP0501" (a _HID for a legacy device class). */
export function eisaId(id: string): Aml {
  if (!/^[A-Z]{3}[0-9A-F]{4}$/.test(id)) throw new RangeError(`'${id}' is not an EISA ID`);
  const letters = [0, 1, 2].map((i) => id.charCodeAt(i) - 0x40);
  const vendor = (letters[0]! << 10) | (letters[1]! << 5) | letters[2]!;
  const product = Number.parseInt(id.slice(3), 16);
  const bytes = [vendor >> 8, vendor & 0xff, product >> 8, product & 0xff];
  return integer(bytes[0]! | (bytes[1]! << 8) | (bytes[2]! << 16) | ((bytes[3]! << 24) >>> 0));
}

export function name(path: string, value: Aml): Aml {
  return concatBytes([Uint8Array.of(NAME_OP), nameString(path), value]);
}

export function packageOf(elements: Aml[]): Aml {
  if (elements.length > 0xff) throw new RangeError("an AML package holds at most 255 elements");
  return withLength([PACKAGE_OP], concatBytes([Uint8Array.of(elements.length), ...elements]));
}

export function buffer(bytes: Uint8Array): Aml {
  return withLength([BUFFER_OP], concatBytes([integer(bytes.byteLength), bytes]));
}

export function device(path: string, body: Aml[]): Aml {
  return withLength([EXT_OP_PREFIX, DEVICE_OP], concatBytes([nameString(path), ...body]));
}

export function scope(path: string, body: Aml[]): Aml {
  return withLength([SCOPE_OP], concatBytes([nameString(path), ...body]));
}

export function method(path: string, args: number, body: Aml[]): Aml {
  if (!Number.isInteger(args) || args < 0 || args > 7) throw new RangeError("an AML method takes 0 to 7 arguments");
  return withLength([METHOD_OP], concatBytes([nameString(path), Uint8Array.of(args), ...body]));
}

export function ifThen(predicate: Aml, body: Aml[]): Aml {
  return withLength([IF_OP], concatBytes([predicate, ...body]));
}

export function equal(left: Aml, right: Aml): Aml {
  return concatBytes([Uint8Array.of(LEQUAL_OP), left, right]);
}

export function notify(path: string, value: number): Aml {
  return concatBytes([Uint8Array.of(NOTIFY_OP), nameString(path), integer(value)]);
}

export const ARG0: Aml = Uint8Array.of(ARG0_OP);

/** Resource descriptors (ACPI 6.5 §6.4) for a device's _CRS. */
const MEMORY32_FIXED = 0x86;
const EXTENDED_INTERRUPT = 0x89;
const END_TAG = 0x79;
const IO_PORT = 0x47;

export function memory32Fixed(base: number, length: number, writable = true): Uint8Array {
  const out = new Uint8Array(12);
  const v = new DataView(out.buffer);
  out[0] = MEMORY32_FIXED;
  v.setUint16(1, 9, true);
  out[3] = writable ? 1 : 0;
  v.setUint32(4, base, true);
  v.setUint32(8, length, true);
  return out;
}

/** A fixed range of I/O ports (16-bit decode). */
export function ioPorts(base: number, count: number): Uint8Array {
  return Uint8Array.of(IO_PORT, 1, base & 0xff, base >> 8, base & 0xff, base >> 8, 1, count);
}

/** An interrupt the device consumes: `edge` or level, active high, not shared. */
export function interrupt(gsi: number, trigger: "edge" | "level"): Uint8Array {
  const out = new Uint8Array(9);
  const v = new DataView(out.buffer);
  out[0] = EXTENDED_INTERRUPT;
  v.setUint16(1, 6, true);
  out[3] = 0x01 | (trigger === "edge" ? 0x02 : 0); // consumer
  out[4] = 1;
  v.setUint32(5, gsi, true);
  return out;
}

/** ResourceTemplate(): the descriptors and the end tag (checksum 0: "treat as correct"). */
export function resourceTemplate(descriptors: Uint8Array[]): Aml {
  return buffer(concatBytes([...descriptors, Uint8Array.of(END_TAG, 0)]));
}
