/**
 * The descriptor's metadata section (JSON), checked field by field: its type, its range, and no
 * field it should not have. Region offsets go straight to KVM_SET_USER_MEMORY_REGION as offsets
 * into the VMM's mapping, so they must be page-aligned, non-overlapping and inside the memory size.
 */
import { BACKENDS, type BackendName, type FreePageMap } from "../backend/backend.ts";
import { MAX_FREE_PAGE_FRAMES } from "../guest/hypercalls.ts";
import { PAGE_SIZE, type RamRegion } from "../guest-memory/layout.ts";
import { MAX_MEMORY_BYTES, MAX_META_BYTES } from "./layout.ts";
import { refuse } from "../sections.ts";

export interface DescriptorMeta {
  backend: BackendName;
  name: string;
  cmdline: string;
  memorySize: number;
  regions: RamRegion[];
  createdAt: string;
  /** Set when the guest itself asked for the clone: its call block, and what clones get back. */
  cloneCall?: CloneCall;
  /** Where the guest's page allocator keeps its bitmap (SF_HC_FREE_PAGES), for the clones' own clones. */
  freePageMap?: FreePageMap;
}

/** sf_clone returns each clone's ID; sf_checkpoint_parent returns 0 in the clones. */
export interface CloneCall {
  block: number;
  returns: "clone-id" | "zero";
}

const MAX_REGIONS = 8;
const MAX_NAME_LENGTH = 255;
const MAX_CMDLINE_LENGTH = 4096;
/** Guest-physical addresses have at most 52 bits on x86-64. */
const GUEST_PHYSICAL_LIMIT = 2 ** 52;

const META_FIELDS = new Set(["backend", "name", "cmdline", "memorySize", "regions", "createdAt", "cloneCall", "freePageMap"]);

type Fields = Record<string, unknown>;

function isObject(value: unknown): value is Fields {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** An object with exactly these fields (optional ones may be absent), or a refusal naming `what`. */
function record(value: unknown, what: string, fields: ReadonlySet<string>): Fields {
  if (!isObject(value)) refuse(`${what} is not a JSON object`);
  const extra = Object.keys(value).find((k) => !fields.has(k));
  if (extra !== undefined) refuse(`${what} has an unknown field ${JSON.stringify(extra.slice(0, 40))}`);
  return value;
}

/** Text that is safe to print: no control characters (terminal escapes), at most `max` long. */
function text(value: unknown, what: string, max: number): string {
  const printable = typeof value === "string" && value.length <= max && !/[\u0000-\u001f\u007f-\u009f]/.test(value);
  if (!printable) refuse(`${what} is not printable text of at most ${max} characters`);
  return value;
}

function count(value: unknown, what: string, { min = 0, max = Number.MAX_SAFE_INTEGER, aligned = 1 } = {}): number {
  if (!Number.isSafeInteger(value) || (value as number) < min || (value as number) > max || (value as number) % aligned !== 0) {
    refuse(`${what} must be a whole number from ${min} to ${max}${aligned > 1 ? `, a multiple of ${aligned}` : ""}`);
  }
  return value as number;
}

/** Ranges [start, start + size) that share no byte. */
function disjoint(ranges: Array<{ start: number; size: number }>): boolean {
  const sorted = [...ranges].sort((a, b) => a.start - b.start);
  return sorted.every((r, i) => i === 0 || sorted[i - 1]!.start + sorted[i - 1]!.size <= r.start);
}

const REGION_FIELDS = new Set(["guestAddress", "size", "offset"]);

function checkRegions(value: unknown, memorySize: number): void {
  if (!Array.isArray(value) || value.length < 1 || value.length > MAX_REGIONS)
    refuse(`the memory regions must be a list of 1 to ${MAX_REGIONS}`);
  const regions = value.map((r, i) => {
    const region = record(r, `memory region ${i}`, REGION_FIELDS);
    const size = count(region.size, `region ${i}'s size`, { min: PAGE_SIZE, max: memorySize, aligned: PAGE_SIZE });
    const offset = count(region.offset, `region ${i}'s offset`, { max: memorySize - size, aligned: PAGE_SIZE });
    const guestAddress = count(region.guestAddress, `region ${i}'s guest address`, {
      max: GUEST_PHYSICAL_LIMIT - size,
      aligned: PAGE_SIZE,
    });
    return { size, offset, guestAddress };
  });
  if (!disjoint(regions.map((r) => ({ start: r.offset, size: r.size })))) refuse("memory regions overlap in the backing");
  if (!disjoint(regions.map((r) => ({ start: r.guestAddress, size: r.size })))) refuse("memory regions overlap in guest-physical space");
}

export function decodeMeta(body: Uint8Array): DescriptorMeta {
  if (body.byteLength > MAX_META_BYTES) refuse(`the metadata takes ${body.byteLength} bytes, more than ${MAX_META_BYTES}`);
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
  } catch {
    refuse("the metadata is not JSON");
  }
  const meta = record(value, "the metadata", META_FIELDS);
  if (!BACKENDS.includes(meta.backend as BackendName))
    refuse(`backend '${text(meta.backend, "the backend", 16)}' is not one snowflock knows`);
  text(meta.name, "the name", MAX_NAME_LENGTH);
  text(meta.cmdline, "the command line", MAX_CMDLINE_LENGTH);
  const createdAt = text(meta.createdAt, "the capture time", 64);
  const isoDate = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/.test(createdAt) && Number.isFinite(Date.parse(createdAt));
  if (!isoDate) refuse("the capture time is not an ISO date");
  const memorySize = count(meta.memorySize, "the memory size", { min: PAGE_SIZE, max: MAX_MEMORY_BYTES, aligned: PAGE_SIZE });
  checkRegions(meta.regions, memorySize);
  if (meta.cloneCall !== undefined) {
    const call = record(meta.cloneCall, "the clone call", new Set(["block", "returns"]));
    count(call.block, "the clone call's block", { max: GUEST_PHYSICAL_LIMIT });
    if (call.returns !== "clone-id" && call.returns !== "zero") refuse("the clone call returns neither 'clone-id' nor 'zero'");
  }
  if (meta.freePageMap !== undefined) {
    const map = record(meta.freePageMap, "the free-page map", new Set(["address", "frames"]));
    count(map.address, "the free-page map's address", { max: GUEST_PHYSICAL_LIMIT });
    count(map.frames, "the free-page map's frames", { min: 1, max: MAX_FREE_PAGE_FRAMES });
  }
  return meta as unknown as DescriptorMeta;
}
