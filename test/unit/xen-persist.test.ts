/**
 * A Xen domain's state in a descriptor (src/backend/xen/persist.ts): written and read back with
 * the descriptor's own sections around it, shown by `inspect`'s summary, and refused in one
 * DESCRIPTOR error when its HVM context is broken or follows a Xen release snowflock lacks.
 */
import { describe, expect, test } from "bun:test";
import type { XenState } from "../../src/backend/xen/persist.ts";
import { openEnvelope, sealEnvelope } from "../../src/descriptor/envelope.ts";
import { decodeDescriptor, encodeDescriptor } from "../../src/descriptor/format.ts";
import { summarize } from "../../src/descriptor/summary.ts";
import { SectionWriter, walkSections } from "../../src/sections.ts";
import { refusal, sampleDescriptor } from "../support/descriptor-sample.ts";
import { blob, cpu, end, header } from "../support/hvm-context-sample.ts";
import { SAMPLE_XEN_CONFIG as CONFIG, sampleXenDescriptor } from "../support/xen-descriptor-sample.ts";

const xenDescriptor = sampleXenDescriptor;

/** The descriptor's payload with the body of its section `type` (16: the HVM context, 17: the configuration) replaced by `body`. */
function withStateBody(body: Uint8Array, type = 16): Uint8Array {
  const w = new SectionWriter();
  for (const section of walkSections(openEnvelope(encodeDescriptor(xenDescriptor())).payload))
    w.add(section.type, section.type === type ? body : section.body);
  return sealEnvelope(w.bytes());
}

describe("a Xen descriptor", () => {
  test("reads back as written, and inspect names its vCPUs from the HVM context", () => {
    const d = xenDescriptor();
    const bytes = encodeDescriptor(d);
    const { descriptor, envelope } = decodeDescriptor(bytes);
    expect(descriptor.meta.backend).toBe("xen");
    const state = descriptor.state as XenState;
    expect(state.release).toBe("4.17");
    expect([...state.context.blob]).toEqual([...d.state.context.blob]);
    expect(state.context.records.map((r) => r.type)).toEqual(["HEADER", "CPU", "CPU", "END"]);
    expect(descriptor.pages.get(2)![0]).toBe(9);
    expect(JSON.parse(state.config)).toEqual(JSON.parse(CONFIG));
    const summary = summarize(descriptor, envelope, bytes.byteLength);
    expect(summary.backend).toBe("xen");
    expect(summary.vcpus).toEqual([
      { index: 0, rip: "0x1000", rsp: "0x0" },
      { index: 1, rip: "0x2000", rsp: "0x0" },
    ]);
  });

  test("a broken HVM context, an unknown release or a missing one is refused", () => {
    const release = new TextEncoder().encode("4.17");
    const body = (name: Uint8Array, context: Uint8Array) => {
      const out = new Uint8Array(4 + name.byteLength + context.byteLength);
      new DataView(out.buffer).setUint32(0, name.byteLength, true);
      out.set(name, 4);
      out.set(context, 4 + name.byteLength);
      return out;
    };
    expect(refusal(withStateBody(body(release, blob([header(), cpu(0, 1)]))))).toContain("without an END record");
    expect(refusal(withStateBody(body(release, blob([header(0xdeadbeef), end]))))).toContain("magic is 0xdeadbeef");
    expect(refusal(withStateBody(body(new TextEncoder().encode("9.99"), blob([header(), end]))))).toContain("follows Xen 9.99");
    expect(refusal(withStateBody(body(new TextEncoder().encode("x".repeat(40)), blob([header(), end]))))).toContain(
      "release name of 40 bytes",
    );
    expect(refusal(withStateBody(new Uint8Array(2)))).toContain("too short");
    // The descriptor's own sections without the state at all.
    const w = new SectionWriter();
    for (const section of walkSections(openEnvelope(encodeDescriptor(xenDescriptor())).payload))
      if (section.type !== 16) w.add(section.type, section.body);
    expect(refusal(sealEnvelope(w.bytes()))).toContain("the HVM context");
  });

  test("a domain configuration that is not libxl's JSON of a PVH domain of the descriptor's memory, or none, is refused", () => {
    const config = (value: unknown) => withStateBody(new TextEncoder().encode(JSON.stringify(value)), 17);
    const good = JSON.parse(CONFIG);
    expect(refusal(withStateBody(new TextEncoder().encode("{not json"), 17))).toContain("not JSON");
    expect(refusal(withStateBody(new Uint8Array([0xff, 0xfe]), 17))).toContain("not UTF-8");
    expect(refusal(config([good]))).toContain("no c_info and b_info");
    expect(refusal(config({ ...good, c_info: { type: "hvm" } }))).toContain('type "hvm", not pvh');
    expect(refusal(config({ ...good, b_info: { ...good.b_info, target_memkb: 1024 } }))).toContain("not the descriptor's 16384 KiB");
    expect(refusal(withStateBody(new Uint8Array(64 * 1024 + 1).fill(0x20), 17))).toContain("more than 65536");
    const w = new SectionWriter();
    for (const section of walkSections(openEnvelope(encodeDescriptor(xenDescriptor())).payload))
      if (section.type !== 17) w.add(section.type, section.body);
    expect(refusal(sealEnvelope(w.bytes()))).toContain("missing: the domain configuration");
  });

  test("a KVM state under Xen metadata (or the other way round) is refused", () => {
    const mixed = xenDescriptor();
    const kvm = sampleDescriptor();
    expect(() => encodeDescriptor({ ...mixed, state: kvm.state })).toThrow("a kvm machine state under xen metadata");
    // KVM sections inside a Xen descriptor: not its backend's.
    const w = new SectionWriter();
    for (const section of walkSections(openEnvelope(encodeDescriptor(xenDescriptor())).payload)) w.add(section.type, section.body);
    for (const section of walkSections(openEnvelope(encodeDescriptor(kvm)).payload))
      if (section.type === 3) w.add(section.type, section.body);
    expect(refusal(sealEnvelope(w.bytes()))).toContain("another backend's machine state");
  });
});
