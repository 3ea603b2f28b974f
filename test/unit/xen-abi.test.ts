/**
 * src/backend/xen/abi.ts against the headers of Xen's tools (Debian's libxen-dev): every flat
 * constant, and for the release whose XEN_DOMCTL_INTERFACE_VERSION the headers carry, every
 * constant, HVM save typecode and struct layout (sizeof, offsetof, member sizeof). One gcc run.
 *
 * Needs gcc and libxen-dev on x86-64. Without <xenctrl.h> the header checks skip with one line —
 * unless CI=true, where they fail.
 */
import { beforeAll, describe, expect, test } from "bun:test";
import * as abi from "../../src/backend/xen/abi.ts";
import { isXenUnavailable } from "../../src/backend/xen/errors.ts";
import type { StructLayout } from "../../src/sys/layout.ts";
import { compareProbed, layoutExpressions, probeC, type CExpression, type LayoutExpression } from "../support/c-abi.ts";

const HEADERS = [
  "xenctrl.h",
  "xenstore.h",
  "xenforeignmemory.h",
  "xenevtchn.h",
  "xentoollog.h",
  "libxl.h",
  "xen/errno.h",
  "xen/hvm/save.h",
  "xen/hvm/params.h",
  "xen/vm_event.h",
  "xen/arch-x86/cpufeatureset.h",
];

function isLayout(v: unknown): v is StructLayout {
  return (
    typeof v === "object" && v !== null && typeof (v as StructLayout).cType === "string" && typeof (v as StructLayout).size === "number"
  );
}

const exported = Object.entries(abi as Record<string, unknown>);
/** Flat numbers: every one is spelt as in C (a macro or an enum constant). */
const flatConstants = exported.filter((e): e is [string, number] => typeof e[1] === "number").sort(([a], [b]) => a.localeCompare(b));
const flatLayouts = exported.filter((e): e is [string, StructLayout] => isLayout(e[1]));

/** HVM_SAVE_CODE(X) for fixed-size records; the variable-length ones have an X_CODE macro. */
const hvmCode = (name: string) => (name === "CPU_XSAVE" || name === "CPU_MSR" ? `${name}_CODE` : `HVM_SAVE_CODE(${name})`);
const value = (expr: string) => `value(${expr})`;

function unavailable(): string | undefined {
  if (process.platform !== "linux" || process.arch !== "x64") return `abi.ts is x86-64 Linux, this is ${process.platform}/${process.arch}`;
  if (!Bun.which("gcc")) return "gcc not found on PATH";
  const pre = Bun.spawnSync(["gcc", "-E", "-x", "c", "-o", "/dev/null", "-"], {
    stdin: new TextEncoder().encode("#include <xenctrl.h>\n"),
    stdout: "ignore",
    stderr: "pipe",
  });
  if (pre.exitCode !== 0) return "gcc cannot find <xenctrl.h> (install Debian's libxen-dev)";
  return undefined;
}

const skipReason = unavailable();
const required = process.env.CI === "true";
if (skipReason && !required) console.warn(`xen-abi: skipping the libxen-dev header checks — ${skipReason}`);

describe("release lookup (no headers needed)", () => {
  test("Xen 4.17 has its ABI, keyed by its interface versions", () => {
    const r = abi.xenReleaseAbi(4, 17);
    expect(r.release).toBe("4.17");
    expect(r.constants.XEN_DOMCTL_INTERFACE_VERSION).toBe(0x15);
    expect(r.constants.XEN_SYSCTL_INTERFACE_VERSION).toBe(0x15);
    expect(r.sonames.xenctrl).toBe("libxenctrl.so.4.17");
  });

  test("an unknown release is refused with one line naming what is known", () => {
    let error: unknown;
    try {
      abi.xenReleaseAbi(4, 18);
    } catch (e) {
      error = e;
    }
    expect(isXenUnavailable(error)).toBe(true);
    expect((error as Error).message).toBe(
      "this hypervisor is Xen 4.18, but snowflock's Xen bindings know only Xen 4.17 (domctl interface 0x15)",
    );
  });

  test("every release has the same shape and a distinct domctl interface version", () => {
    const versions = Object.values(abi.XEN_RELEASES).map((r) => r.constants.XEN_DOMCTL_INTERFACE_VERSION);
    expect(new Set(versions).size).toBe(versions.length);
    for (const [key, r] of Object.entries(abi.XEN_RELEASES)) expect(r.release).toBe(key);
  });
});

if (skipReason && required) {
  test("libxen-dev header checks can run (CI=true)", () => {
    throw new Error(`CI=true but ${skipReason}; add libxen-dev to the CI image`);
  });
}

const releases = Object.values(abi.XEN_RELEASES);
/** The release the installed headers are from, found by their domctl interface version. */
const headerDomctl =
  skipReason === undefined ? (await probeC(HEADERS, [{ name: "domctl", expr: "XEN_DOMCTL_INTERFACE_VERSION" }])).get("domctl") : undefined;
const headerRelease = releases.find((r) => BigInt(r.constants.XEN_DOMCTL_INTERFACE_VERSION) === headerDomctl);

const title = skipReason === undefined ? "abi.ts vs libxen-dev" : `abi.ts vs libxen-dev (skipped: ${skipReason})`;
describe.skipIf(skipReason !== undefined)(title, () => {
  const flatLayoutChecks = new Map<string, LayoutExpression[]>(flatLayouts.map(([name, l]) => [name, layoutExpressions(l)]));
  const releaseLayoutChecks = new Map<string, LayoutExpression[]>(
    Object.entries(headerRelease?.layouts ?? {}).map(([name, l]) => [name, layoutExpressions(l as StructLayout)]),
  );
  const expressions: CExpression[] = [
    ...[...flatLayoutChecks.values()].flat(),
    ...flatConstants.map(([name]) => ({ name: value(name), expr: name, signed: true })),
    // Only the headers' own release can be compiled against them.
    ...Object.keys(headerRelease?.constants ?? {}).map((name) => ({ name: value(name), expr: name, signed: true })),
    ...Object.keys(headerRelease?.hvmSaveTypes ?? {}).map((name) => ({ name: value(hvmCode(name)), expr: hvmCode(name) })),
    { name: value("HVM_SAVE_CODE_MAX"), expr: "HVM_SAVE_CODE_MAX" },
    ...[...releaseLayoutChecks.values()].flat(),
  ];

  let probed = new Map<string, bigint>();
  beforeAll(async () => {
    probed = await probeC(HEADERS, expressions);
  });

  test("the headers are from a release abi.ts knows", () => {
    const found = headerRelease
      ? `Xen ${headerRelease.release}`
      : `no entry in XEN_RELEASES for XEN_DOMCTL_INTERFACE_VERSION 0x${headerDomctl?.toString(16)}`;
    expect(found).toBe(`Xen ${headerRelease?.release ?? "?"}`);
  });

  describe("flat constants", () => {
    for (const [name, ours] of flatConstants) {
      test(name, () => {
        expect(`${name} = ${ours}`).toBe(`${name} = ${probed.get(value(name))}`);
      });
    }
  });

  describe("flat struct layouts", () => {
    for (const [name, layout] of flatLayouts) {
      test(`${name} (${layout.cType})`, () => {
        const { expected, actual } = compareProbed(flatLayoutChecks.get(name)!, probed);
        expect(actual).toEqual(expected);
      });
    }
  });

  for (const release of releases) {
    const other = skipReason === undefined && release !== headerRelease;
    describe.skipIf(other)(`Xen ${release.release}${other ? " (skipped: the headers are another release)" : ""}`, () => {
      for (const [name, ours] of Object.entries(release.constants)) {
        test(`constant ${name}`, () => {
          expect(`${name} = ${ours}`).toBe(`${name} = ${probed.get(value(name))}`);
        });
      }

      for (const [name, code] of Object.entries(release.hvmSaveTypes)) {
        test(`HVM save type ${name}`, () => {
          expect(`${hvmCode(name)} = ${code}`).toBe(`${hvmCode(name)} = ${probed.get(value(hvmCode(name)))}`);
        });
      }

      test("the HVM save types reach HVM_SAVE_CODE_MAX", () => {
        expect(Math.max(...Object.values(release.hvmSaveTypes))).toBe(Number(probed.get(value("HVM_SAVE_CODE_MAX"))));
      });

      for (const [name, layout] of Object.entries(release.layouts)) {
        test(`layout ${name} (${layout.cType})`, () => {
          const { expected, actual } = compareProbed(releaseLayoutChecks.get(name)!, probed);
          expect(actual).toEqual(expected);
        });
      }
    });
  }
});
