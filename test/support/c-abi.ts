/**
 * Checks hand-written ABI numbers against the system's C headers: one small C program prints the
 * value of each expression, gcc compiles it, we run it and read the numbers back.
 *
 * Used by test/unit/*-abi.test.ts (KVM now, Xen later). Collect every expression a test file needs
 * and call probeC once — each call is one gcc run.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { StructLayout } from "../../src/sys/layout.ts";

export interface CExpression {
  /** Key in the result map; any text without a newline. */
  name: string;
  /** A C integer constant expression, e.g. "sizeof(struct kvm_regs)" or "KVM_GET_REGS". */
  expr: string;
  /** Print as signed long long instead of unsigned long long. */
  signed?: boolean;
  /**
   * Only evaluate when this macro is defined (`#ifdef`); otherwise the name is left out of the
   * result, so one missing macro does not break the whole compile.
   */
  ifdef?: string;
}

export interface ProbeOptions {
  /** Compiler; default "gcc". */
  cc?: string;
  /** Extra flags, e.g. ["-I/opt/xen/include"]. */
  cflags?: string[];
}

function includeLine(header: string): string {
  const h = header.trim();
  return `#include ${h.startsWith("<") || h.startsWith('"') ? h : `<${h}>`}`;
}

function cString(text: string): string {
  if (/[\r\n]/.test(text)) throw new Error(`probeC: name contains a newline: ${JSON.stringify(text)}`);
  return `"${text.replace(/[\\"?]/g, (c) => `\\${c}`)}"`;
}

/** The C source probeC compiles; exposed for debugging. */
export function probeSource(headers: string[], expressions: CExpression[]): string {
  const seen = new Map<string, CExpression>();
  const lines = ["#include <stddef.h>", "#include <stdio.h>", ...headers.map(includeLine), "", "int main(void) {"];
  for (const e of expressions) {
    const before = seen.get(e.name);
    if (before) {
      // The same expression asked for twice (e.g. a struct's sizeof by its layout and by an ioctl) is fine.
      if (before.expr === e.expr && !!before.signed === !!e.signed && before.ifdef === e.ifdef) continue;
      throw new Error(`probeC: name ${JSON.stringify(e.name)} used for two different expressions`);
    }
    seen.set(e.name, e);
    const print = e.signed
      ? `  printf("%s %lld\\n", ${cString(e.name)}, (long long)(${e.expr}));`
      : `  printf("%s %llu\\n", ${cString(e.name)}, (unsigned long long)(${e.expr}));`;
    if (e.ifdef !== undefined) {
      if (!/^[A-Za-z_]\w*$/.test(e.ifdef)) throw new Error(`probeC: bad macro name ${JSON.stringify(e.ifdef)}`);
      lines.push(`#ifdef ${e.ifdef}`, print, "#endif");
    } else {
      lines.push(print);
    }
  }
  lines.push("  return 0;", "}", "");
  return lines.join("\n");
}

async function run(argv: string[], cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = Bun.spawn(argv, { cwd, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const [stdout, stderr, code] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
  return { code, stdout, stderr };
}

/**
 * Compiles and runs a program that prints every expression, returning name → value. Expressions
 * guarded by `ifdef` whose macro is undefined are absent from the map. Throws with gcc's stderr if
 * the program does not compile.
 */
export async function probeC(headers: string[], expressions: CExpression[], options: ProbeOptions = {}): Promise<Map<string, bigint>> {
  const source = probeSource(headers, expressions);
  const dir = await mkdtemp(join(tmpdir(), "snowflock-c-abi-"));
  try {
    const src = join(dir, "probe.c");
    const exe = join(dir, "probe");
    await writeFile(src, source);
    const cc = await run([options.cc ?? "gcc", "-std=gnu11", "-O0", ...(options.cflags ?? []), "-o", exe, src], dir);
    if (cc.code !== 0) {
      throw new Error(`probeC: ${options.cc ?? "gcc"} failed (exit ${cc.code}) for headers ${headers.join(", ")}:\n${cc.stderr}`);
    }
    const out = await run([exe], dir);
    if (out.code !== 0) throw new Error(`probeC: probe program exited with ${out.code}:\n${out.stderr}`);

    const values = new Map<string, bigint>();
    for (const line of out.stdout.split("\n")) {
      if (line === "") continue;
      const space = line.lastIndexOf(" ");
      if (space < 0) throw new Error(`probeC: unexpected output line ${JSON.stringify(line)}`);
      values.set(line.slice(0, space), BigInt(line.slice(space + 1)));
    }
    for (const e of expressions) {
      if (e.ifdef === undefined && !values.has(e.name)) throw new Error(`probeC: no value printed for ${e.name}`);
    }
    return values;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** A layout expression together with the value our StructLayout claims for it. */
export interface LayoutExpression extends CExpression {
  expected: bigint;
}

/**
 * sizeof(cType); and per field offsetof(cType, designator) and sizeof of the member. Flexible array
 * members (a "bytes" field of size 0) get only the offset check — sizeof of `x[]` is an error in C.
 * The name of each expression is its C text, so it reads well in a failure.
 */
export function layoutExpressions(layout: StructLayout): LayoutExpression[] {
  const t = layout.cType;
  const out: LayoutExpression[] = [{ name: `sizeof(${t})`, expr: `sizeof(${t})`, expected: BigInt(layout.size) }];
  for (const [designator, field] of Object.entries(layout.fields)) {
    const offsetof = `offsetof(${t}, ${designator})`;
    out.push({ name: offsetof, expr: offsetof, expected: BigInt(field.offset) });
    if (field.type === "bytes" && field.size === 0) continue;
    const sizeof = `sizeof(((${t} *)0)->${designator})`;
    out.push({ name: sizeof, expr: sizeof, expected: BigInt(field.size) });
  }
  return out;
}

/**
 * Our values and the header's, side by side, keyed by expression name — for
 * `expect(actual).toEqual(expected)`, whose diff then names the wrong members.
 */
export function compareProbed(
  expressions: LayoutExpression[],
  probed: Map<string, bigint>,
): { expected: Record<string, number | string>; actual: Record<string, number | string> } {
  const expected: Record<string, number | string> = {};
  const actual: Record<string, number | string> = {};
  for (const e of expressions) {
    actual[e.name] = Number(e.expected);
    const v = probed.get(e.name);
    expected[e.name] = v === undefined ? "(not probed)" : Number(v);
  }
  return { expected, actual };
}

/** Linux's generic ioctl encoding (include/uapi/asm-generic/ioctl.h, used by x86 and arm64). */
export const IOC_NONE = 0;
export const IOC_WRITE = 1;
export const IOC_READ = 2;

const IOC_NRBITS = 8;
const IOC_TYPEBITS = 8;
const IOC_SIZEBITS = 14;
const IOC_DIRBITS = 2;
const IOC_NRSHIFT = 0;
const IOC_TYPESHIFT = IOC_NRSHIFT + IOC_NRBITS;
const IOC_SIZESHIFT = IOC_TYPESHIFT + IOC_TYPEBITS;
const IOC_DIRSHIFT = IOC_SIZESHIFT + IOC_SIZEBITS;

function field(what: string, value: number, bits: number): number {
  if (!Number.isInteger(value) || value < 0 || value >= 2 ** bits) {
    throw new RangeError(`_IOC ${what} ${value} does not fit in ${bits} bits`);
  }
  return value;
}

/** _IOC(dir, type, nr, size) as an unsigned 32-bit number. */
export function ioc(dir: number, type: number, nr: number, size: number): number {
  return (
    ((field("dir", dir, IOC_DIRBITS) << IOC_DIRSHIFT) |
      (field("type", type, IOC_TYPEBITS) << IOC_TYPESHIFT) |
      (field("nr", nr, IOC_NRBITS) << IOC_NRSHIFT) |
      (field("size", size, IOC_SIZEBITS) << IOC_SIZESHIFT)) >>>
    0
  );
}

export const _IO = (type: number, nr: number): number => ioc(IOC_NONE, type, nr, 0);
export const _IOR = (type: number, nr: number, size: number): number => ioc(IOC_READ, type, nr, size);
export const _IOW = (type: number, nr: number, size: number): number => ioc(IOC_WRITE, type, nr, size);
export const _IOWR = (type: number, nr: number, size: number): number => ioc(IOC_READ | IOC_WRITE, type, nr, size);

/** Direction for an _IO/_IOR/_IOW/_IOWR macro name. */
export const IOC_DIRECTION = { _IO: IOC_NONE, _IOR: IOC_READ, _IOW: IOC_WRITE, _IOWR: IOC_READ | IOC_WRITE } as const;
export type IocMacro = keyof typeof IOC_DIRECTION;

export interface IoctlComment {
  /** The constant's name, e.g. "KVM_GET_REGS". */
  name: string;
  macro: IocMacro;
  /** The type argument as written, e.g. "KVMIO". */
  typeArg: string;
  nr: number;
  /** The argument type as written, e.g. "struct kvm_regs" or "__u64"; undefined for _IO. */
  argType: string | undefined;
  /** The comment text, e.g. "_IOR(KVMIO, 0x81, struct kvm_regs)". */
  text: string;
}

/**
 * Finds `export const NAME = value; // _IOx(TYPE, nr[, argtype])` lines in a source file.
 * Lines that have an _IO… comment but cannot be parsed throw, so a typo is not silently skipped.
 */
export function parseIoctlComments(source: string): IoctlComment[] {
  const out: IoctlComment[] = [];
  for (const line of source.split("\n")) {
    const m = /^\s*export\s+const\s+(\w+)\s*=\s*[^;]+;\s*\/\/\s*(.*)$/.exec(line);
    if (!m || !/^_IO/.test(m[2]!)) continue;
    const name = m[1]!;
    const text = m[2]!.trim();
    const c = /^(_IO|_IOR|_IOW|_IOWR)\(\s*(\w+)\s*,\s*(0[xX][0-9a-fA-F]+|\d+)\s*(?:,\s*([^()]+?)\s*)?\)/.exec(text);
    if (!c) throw new Error(`cannot parse ioctl comment for ${name}: ${text}`);
    const macro = c[1] as IocMacro;
    const argType = c[4];
    if ((macro === "_IO") !== (argType === undefined)) {
      throw new Error(`${name}: ${macro} ${macro === "_IO" ? "takes no" : "needs an"} argument type: ${text}`);
    }
    out.push({ name, macro, typeArg: c[2]!, nr: Number(c[3]!), argType, text: c[0]! });
  }
  return out;
}
