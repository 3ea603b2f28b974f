/**
 * src/backend/kvm/abi.ts against <linux/kvm.h>: every struct layout (sizeof, offsetof, member
 * sizeof), every ioctl number (re-encoded from its comment, and compared with the header's macro)
 * and every other KVM_ constant. One gcc compile for the whole file.
 *
 * Needs gcc, the kernel headers and x86-64. Without them the header checks are skipped — unless
 * SNOWFLOCK_REQUIRE_KVM=1, in which case they fail.
 */
import { beforeAll, describe, expect, test } from "bun:test";
import * as abi from "../../src/backend/kvm/abi.ts";
import type { StructLayout } from "../../src/sys/layout.ts";
import {
  _IO,
  _IOR,
  _IOW,
  _IOWR,
  compareProbed,
  IOC_DIRECTION,
  ioc,
  layoutExpressions,
  parseIoctlComments,
  probeC,
  type CExpression,
  type IoctlComment,
  type LayoutExpression,
} from "../support/c-abi.ts";

const HEADERS = ["linux/kvm.h"];
const SOURCE_URL = new URL("../../src/backend/kvm/abi.ts", import.meta.url);

const hex = (v: number | bigint | undefined): string => (v === undefined ? "undefined" : `0x${v.toString(16)}`);

// ---- what abi.ts exports ----

function isLayout(v: unknown): v is StructLayout {
  if (typeof v !== "object" || v === null) return false;
  const o = v as Record<string, unknown>;
  return typeof o.cType === "string" && typeof o.size === "number" && typeof o.fields === "object" && o.fields !== null;
}

const exports: [string, unknown][] = Object.entries(abi as Record<string, unknown>);

const layouts = exports.filter((e): e is [string, StructLayout] => isLayout(e[1])).sort(([a], [b]) => a.localeCompare(b));

const numbers = exports.filter((e): e is [string, number] => e[0].startsWith("KVM_") && typeof e[1] === "number");

const ioctlComments: IoctlComment[] = parseIoctlComments(await Bun.file(SOURCE_URL).text());
const commented = new Set(ioctlComments.map((c) => c.name));
const exported = new Map(numbers);

const looksLikeIoctl = (v: number): boolean => v > 0xffff || (v & 0xff00) === 0xae00;
const constants = numbers.filter(([name]) => !commented.has(name)).sort(([a], [b]) => a.localeCompare(b));

// ---- can we ask gcc? ----

function unavailable(): string | undefined {
  if (process.platform !== "linux" || process.arch !== "x64") return `abi.ts is x86-64 Linux, this is ${process.platform}/${process.arch}`;
  if (!Bun.which("gcc")) return "gcc not found on PATH";
  const pre = Bun.spawnSync(["gcc", "-E", "-x", "c", "-o", "/dev/null", "-"], {
    stdin: new TextEncoder().encode("#include <linux/kvm.h>\n"),
    stdout: "ignore",
    stderr: "pipe",
  });
  if (pre.exitCode !== 0) return `gcc cannot find <linux/kvm.h>: ${pre.stderr.toString().trim().split("\n")[0]}`;
  return undefined;
}

const skipReason = unavailable();
const required = process.env.SNOWFLOCK_REQUIRE_KVM === "1";
if (skipReason && !required) console.warn(`kvm-abi: skipping <linux/kvm.h> checks — ${skipReason}`);

// ---- the encoder itself (no gcc needed) ----

describe("ioc encoder", () => {
  test("matches known KVM ioctl numbers", () => {
    expect(ioc(2, 0xae, 0x81, 144)).toBe(0x8090ae81); // KVM_GET_REGS
    expect(_IOR(0xae, 0x81, 144)).toBe(0x8090ae81);
    expect(_IO(0xae, 0x80)).toBe(0xae80); // KVM_RUN
    expect(_IO(0xae, 0x00)).toBe(0xae00); // KVM_GET_API_VERSION
    expect(_IOW(0xae, 0x46, 32)).toBe(0x4020ae46); // KVM_SET_USER_MEMORY_REGION
    expect(_IOWR(0xae, 0x05, 8)).toBe(0xc008ae05); // KVM_GET_SUPPORTED_CPUID
    expect(_IOR(0xae, 0xa4, 4096)).toBe(0x9000aea4); // KVM_GET_XSAVE
  });

  test("matches non-KVM ioctls", () => {
    expect(_IOR(0x54, 0x30, 4)).toBe(0x80045430); // TIOCGPTN: _IOR('T', 0x30, unsigned int)
    expect(_IOW(0x40 /* '@' */, 0x00, 8)).toBe(0x40084000);
  });

  test("returns an unsigned 32-bit number", () => {
    expect(ioc(3, 0xff, 0xff, 0x3fff)).toBe(0xffffffff);
    expect(ioc(0, 0, 0, 0)).toBe(0);
  });

  test("rejects fields that do not fit", () => {
    expect(() => ioc(4, 0xae, 0, 0)).toThrow(RangeError);
    expect(() => ioc(0, 0x100, 0, 0)).toThrow(RangeError);
    expect(() => ioc(0, 0xae, 0x100, 0)).toThrow(RangeError);
    expect(() => ioc(2, 0xae, 0, 0x4000)).toThrow(RangeError);
    expect(() => ioc(2, 0xae, 0, -1)).toThrow(RangeError);
  });
});

// ---- abi.ts source checks (no gcc needed) ----

describe("abi.ts ioctl comments", () => {
  test("every commented line is an exported number", () => {
    expect(ioctlComments.length).toBeGreaterThan(0);
    const stray = ioctlComments.filter((c) => !exported.has(c.name)).map((c) => c.name);
    expect(stray).toEqual([]);
  });

  test("every KVM_ constant that looks like an ioctl has an _IO… comment", () => {
    const missing = constants.filter(([, v]) => looksLikeIoctl(v)).map(([name, v]) => `${name} = ${hex(v)}`);
    expect(missing).toEqual([]);
  });

  test("layouts are exported", () => {
    expect(layouts.length).toBeGreaterThan(0);
  });
});

// ---- against <linux/kvm.h> ----

if (skipReason && required) {
  test("<linux/kvm.h> checks can run (SNOWFLOCK_REQUIRE_KVM=1)", () => {
    throw new Error(`SNOWFLOCK_REQUIRE_KVM=1 but ${skipReason}`);
  });
}

const title = skipReason === undefined ? "abi.ts vs <linux/kvm.h>" : `abi.ts vs <linux/kvm.h> (skipped: ${skipReason})`;
describe.skipIf(skipReason !== undefined)(title, () => {
  const layoutChecks = new Map<string, LayoutExpression[]>(layouts.map(([name, l]) => [name, layoutExpressions(l)]));
  const argTypes = [...new Set(ioctlComments.flatMap((c) => (c.argType === undefined ? [] : [c.argType])))];
  const typeArgs = [...new Set(ioctlComments.map((c) => c.typeArg))];

  const argSize = (type: string) => `sizeof(${type})`;
  const typeValue = (arg: string) => `value(${arg})`;
  const macro = (name: string) => `macro(${name})`;

  const expressions: CExpression[] = [
    ...[...layoutChecks.values()].flat(),
    ...argTypes.map((t) => ({ name: argSize(t), expr: `sizeof(${t})` })),
    ...typeArgs.map((a) => ({ name: typeValue(a), expr: a })),
    ...ioctlComments.map((c) => ({ name: macro(c.name), expr: c.name, ifdef: c.name })),
    ...constants.map(([name]) => ({ name: macro(name), expr: name, ifdef: name, signed: true })),
  ];

  let probed = new Map<string, bigint>();
  beforeAll(async () => {
    if (skipReason !== undefined) return;
    probed = await probeC(HEADERS, expressions);
  });

  describe("struct layouts", () => {
    for (const [name, layout] of layouts) {
      test(`${name} (${layout.cType})`, () => {
        const { expected, actual } = compareProbed(layoutChecks.get(name)!, probed);
        expect(actual).toEqual(expected);
      });
    }
  });

  describe("ioctl numbers", () => {
    test("KVMIO is 0xAE", () => {
      expect(hex(probed.get(typeValue("KVMIO")))).toBe("0xae");
    });

    for (const c of ioctlComments) {
      const ours = exported.get(c.name);

      test(`${c.name} = ${c.text}`, () => {
        const type = probed.get(typeValue(c.typeArg));
        const size = c.argType === undefined ? 0n : probed.get(argSize(c.argType));
        expect(type).toBeDefined();
        expect(size).toBeDefined();
        const encoded = ioc(IOC_DIRECTION[c.macro], Number(type), c.nr, Number(size));
        expect(hex(ours)).toBe(hex(encoded)); // Received: abi.ts; Expected: the comment, encoded.
      });

      test(`${c.name} equals the header's macro`, () => {
        const header = probed.get(macro(c.name));
        // Received: abi.ts; Expected: the header.
        expect(`${c.name} = ${hex(ours)}`).toBe(`${c.name} = ${header === undefined ? "not defined in <linux/kvm.h>" : hex(header)}`);
      });
    }
  });

  describe("other constants", () => {
    for (const [name, ours] of constants) {
      test(name, () => {
        const header = probed.get(macro(name));
        expect(`${name} = ${ours}`).toBe(`${name} = ${header === undefined ? "not defined in <linux/kvm.h>" : header}`);
      });
    }
  });
});
