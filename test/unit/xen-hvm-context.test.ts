/**
 * The HVM save blob walker on blobs built here the way Xen's hvm_save() writes them: descriptors
 * and payloads in order, the HEADER first, the END last; and its refusals of broken blobs.
 */
import { describe, expect, test } from "bun:test";
import { XEN_RELEASES } from "../../src/backend/xen/abi.ts";
import { parseHvmContext } from "../../src/backend/xen/hvm-context.ts";
import { StructView } from "../../src/sys/layout.ts";
import { blob, cpu, end, header, type Piece } from "../support/hvm-context-sample.ts";

const abi = XEN_RELEASES["4.17"]!;
const { hvm_hw_cpu } = abi.layouts;

describe("parseHvmContext", () => {
  test("walks every record and reads the header", () => {
    const lapic: Piece = { typecode: abi.hvmSaveTypes.LAPIC, instance: 1, payload: new Uint8Array(40) };
    const unknown: Piece = { typecode: 30, instance: 0, payload: new Uint8Array(12) }; // a typecode this release does not name
    const data = blob([header(), cpu(0, 0x1000), cpu(1, 0x2000), lapic, unknown, end]);
    const context = parseHvmContext(data, abi);

    expect(context.header).toEqual({ magic: 0x54381286, version: 1, changeset: 0x1234_5678_9abcn, cpuid: 0x306c3, gtscKhz: 2_400_000 });
    expect(context.records.map((r) => [r.type, r.typecode, r.instance, r.length])).toEqual([
      ["HEADER", 1, 0, 24],
      ["CPU", 2, 0, 1032],
      ["CPU", 2, 1, 1032],
      ["LAPIC", 5, 1, 40],
      [undefined, 30, 0, 12],
      ["END", 0, 0, 0],
    ]);
    const second = context.records[2]!;
    expect(new StructView(hvm_hw_cpu, data, second.offset).get("rip")).toBe(0x2000);
    expect(context.records.at(-1)!.offset).toBe(data.byteLength);
  });

  test("stops at END and ignores what follows", () => {
    const data = blob([header(), end, cpu(0, 1)]);
    expect(parseHvmContext(data, abi).records.map((r) => r.type)).toEqual(["HEADER", "END"]);
  });

  const broken: Array<[string, Uint8Array, RegExp]> = [
    ["no END record", blob([header(), cpu(0, 1)]), /without an END record/],
    ["a record longer than the blob", blob([header(), { ...cpu(0, 1), length: 5000 }, end]), /claims 5000 bytes, past the end/],
    ["a cut descriptor", blob([header()]).subarray(0, 30), /without an END record|past the end/],
    ["no HEADER first", blob([cpu(0, 1), end]), /does not start with a HEADER record/],
    ["a wrong magic", blob([header(0xdeadbeef), end]), /magic is 0xdeadbeef/],
    ["another format version", blob([header(undefined, 2), end]), /format version is 2/],
    ["an empty blob", new Uint8Array(0), /without an END record/],
  ];
  for (const [what, data, message] of broken) {
    test(`refuses ${what}`, () => {
      expect(() => parseHvmContext(data, abi)).toThrow(message);
    });
  }
});
