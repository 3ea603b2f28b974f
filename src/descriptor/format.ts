/**
 * A VM descriptor: everything a clone needs to start except bulk memory — the machine's state
 * (its backend's sections, opaque here), the memory layout, which pages are non-zero, and the few
 * pages a clone needs at once (page tables, the pages under RIP and RSP). The format knows no
 * backend: the metadata names it, and that backend's persist module reads its own sections.
 */
import type { BackendState, StateDecoder } from "../backend/backend.ts";
import { STATE_SECTION_TYPES, statePersist } from "../backend/persist.ts";
import { PAGE_SIZE } from "../guest-memory/layout.ts";
import { FieldReader, refuse, SectionWriter, walkSections } from "../sections.ts";
import { type EnvelopeInfo, openEnvelope, sealEnvelope } from "./envelope.ts";
import { INCLUDED_PAGE_BYTES, MAX_INCLUDED_PAGES, maxPayloadBytes } from "./layout.ts";
import { decodeMeta } from "./meta.ts";

/** Readers of descriptor files refuse larger ones before reading (bounded-read.ts). */
export { MAX_DESCRIPTOR_FILE_BYTES } from "./envelope.ts";

export type { CloneCall, DescriptorMeta } from "./meta.ts";
import type { DescriptorMeta } from "./meta.ts";

export interface Descriptor {
  meta: DescriptorMeta;
  /** The machine's state: its backend's (meta.backend) own sections. */
  state: BackendState;
  /** One bit per page of the backing (in backing order): set where the page may be non-zero. */
  nonZeroPages: Uint8Array;
  /** Pages sent along with the descriptor, by backing page number. */
  pages: Map<number, Uint8Array>;
  /** One bit per backing page: set where the guest's allocator had the page free at capture. */
  freePages?: Uint8Array;
}

/** The descriptor's own sections; a backend's state takes other types (2, 3 and 8 for KVM, 16 and 17 for Xen). */
const Section = { META: 1, NONZERO_BITMAP: 4, PAGES: 5, FREE_BITMAP: 6 } as const;
const SECTION_NAMES: Readonly<Record<number, string>> = {
  [Section.META]: "metadata",
  [Section.NONZERO_BITMAP]: "page bitmap",
  [Section.PAGES]: "pages",
  [Section.FREE_BITMAP]: "free-page bitmap",
};

export function encodeDescriptor(d: Descriptor): Uint8Array {
  const w = new SectionWriter();
  if (d.state.backend !== d.meta.backend) refuse(`a ${d.state.backend} machine state under ${d.meta.backend} metadata`);
  w.add(Section.META, new TextEncoder().encode(JSON.stringify(d.meta)));
  w.addWritten(statePersist(d.meta.backend).encode(d.state));
  w.add(Section.NONZERO_BITMAP, d.nonZeroPages);
  if (d.freePages) w.add(Section.FREE_BITMAP, d.freePages);
  const numbers = [...d.pages.keys()].sort((a, b) => a - b);
  const pages = new Uint8Array(4 + numbers.length * INCLUDED_PAGE_BYTES);
  const index = new DataView(pages.buffer);
  index.setUint32(0, numbers.length, true);
  numbers.forEach((n, i) => {
    index.setBigUint64(4 + i * 8, BigInt(n), true);
    pages.set(d.pages.get(n)!, 4 + numbers.length * 8 + i * PAGE_SIZE);
  });
  w.add(Section.PAGES, pages);
  return sealEnvelope(w.bytes());
}

function sectionLength(body: Uint8Array, what: string, expected: number): void {
  if (body.byteLength !== expected) refuse(`the ${what} does not match the layout: ${body.byteLength} bytes where ${expected} belong`);
}

/**
 * Decodes and checks a descriptor while walking it: the metadata first (it fixes the memory size,
 * hence every later section's size), then each section's type, uniqueness and length before its
 * body is read. Anything else is refused with a DESCRIPTOR error.
 */
export function decodeDescriptor(bytes: Uint8Array): { descriptor: Descriptor; envelope: EnvelopeInfo } {
  const { payload, info } = openEnvelope(bytes);
  let meta: DescriptorMeta | undefined;
  let pageCount = 0;
  let state: StateDecoder | undefined;
  let stateTypes: ReadonlySet<number> = new Set();
  let nonZeroPages: Uint8Array | undefined;
  let freePages: Uint8Array | undefined;
  const pages = new Map<number, Uint8Array>();
  const seen = new Set<number>();
  for (const { type, body } of walkSections(payload)) {
    if (meta && stateTypes.has(type)) {
      state!.take(type, body);
      continue;
    }
    const name = SECTION_NAMES[type] ?? (STATE_SECTION_TYPES.has(type) ? "machine state" : refuse(`unknown section type ${type}`));
    if (!meta && type !== Section.META) refuse(`the ${name} section comes before the metadata`);
    if (seen.has(type)) refuse(`the ${name} section appears twice`);
    seen.add(type);
    switch (type) {
      case Section.META: {
        meta = decodeMeta(body);
        pageCount = meta.memorySize / PAGE_SIZE;
        if (payload.byteLength > maxPayloadBytes(meta.memorySize))
          refuse(`a ${payload.byteLength}-byte payload is more than ${meta.memorySize} bytes of memory need`);
        const persist = statePersist(meta.backend);
        state = persist.decoder(meta.memorySize);
        stateTypes = persist.sectionTypes;
        break;
      }
      case Section.NONZERO_BITMAP:
        sectionLength(body, name, Math.ceil(pageCount / 8));
        nonZeroPages = body.slice();
        break;
      case Section.FREE_BITMAP:
        sectionLength(body, name, Math.ceil(pageCount / 8));
        freePages = body.slice();
        break;
      case Section.PAGES:
        decodePages(body, pageCount, pages);
        break;
      default:
        refuse(`section type ${type} holds another backend's machine state than ${meta!.backend}'s`);
    }
  }
  if (!meta || !state || !nonZeroPages) refuse("a required section is missing");
  return { descriptor: { meta, state: state.finish(), nonZeroPages, pages, freePages }, envelope: info };
}

/** The pages section: a count, that many page numbers (ascending, inside guest memory), the pages. */
function decodePages(body: Uint8Array, pageCount: number, pages: Map<number, Uint8Array>): void {
  const r = new FieldReader(body, "pages");
  const count = r.u32();
  if (count > Math.min(pageCount, MAX_INCLUDED_PAGES))
    refuse(`${count} pages sent along, more than ${Math.min(pageCount, MAX_INCLUDED_PAGES)}`);
  sectionLength(body, "pages", 4 + count * INCLUDED_PAGE_BYTES);
  const numbers = Array.from({ length: count }, () => r.u64());
  numbers.forEach((n, i) => {
    if (n >= BigInt(pageCount)) refuse(`page ${n} is outside guest memory`);
    if (i > 0 && n <= numbers[i - 1]!) refuse(`page ${n} is sent along twice or out of order`);
  });
  for (const n of numbers) pages.set(Number(n), r.bytes(PAGE_SIZE));
}
