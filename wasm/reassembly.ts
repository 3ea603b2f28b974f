// mcdist fragment-reassembly kernel (AssemblyScript -> WebAssembly).
//
// The same algorithm as src/mcdist/reassembly.ts (the plain TypeScript
// reference), with all state in this module's linear memory: one send of one
// object (same object number and sequence) is reassembled on its own, at most
// `slots` sends are in progress at once (the oldest is evicted to make room),
// and a send that grows beyond `maxObjectBytes` is dropped.
//
// Layout and algorithm:
//   * A fixed table of `slots` partial slots, allocated by `init`. Each slot
//     has a 64-byte header (key, fragment count, received-fragments bitmask,
//     byte total, age-list links, state), a fragment table (offset and length
//     of each of up to MAX_FRAGMENTS fragments) and a data area of
//     `maxObjectBytes` bytes.
//   * Fragments are appended to the data area in arrival order and their
//     (offset, length) recorded, so reassembly is exact for any arrival order
//     and any fragment sizes (the byte total is checked against
//     `maxObjectBytes` before anything is written). When the fragments arrived
//     in index order (the usual case) the data area already is the object;
//     otherwise it is gathered in index order into a scratch output buffer on
//     completion.
//   * (object, sequence) -> slot is an open-addressing hash table (linear
//     probing, at most half full, backward-shift deletion, no tombstones).
//   * Age order is a doubly linked list of the partial slots (head = oldest);
//     free slots are kept on a stack.
//
// Use from JavaScript:
//   1. `init(slots, maxObjectBytes)` once; it is the only function that
//      allocates, so linear memory never grows afterwards.
//   2. Per frame: copy the payload to `inputPtr()` (unless fragments == 1 or
//      length > maxObjectBytes: the kernel does not read it then), and call
//      `add(object, sequence, fragment, fragments, length)`. The object
//      number is an i64, i.e. a BigInt on the JavaScript side.
//   3. A status >= 0 is a completed slot: its object is the
//      `objectLength(slot)` bytes at `objectPtr(slot)`, valid until
//      `release(slot)`, the next `add` (which releases it implicitly) or
//      `clear`.
//
// Status codes returned by `add` (mirrored in src/wasm/reassembly.ts):
//   >= 0  completed: the slot index holding the object
//     -1  PENDING: accepted, the send is still incomplete
//     -2  DUPLICATE: that fragment of that send was already held
//     -3  INCONSISTENT: fragment index / count disagree (with each other, or
//         with the send's first fragment), or more than MAX_FRAGMENTS
//     -4  OVERSIZED: the send grew beyond maxObjectBytes and was dropped
//     -5  COMPLETE_INPUT: a single-fragment object, complete as it is: the
//         `length` bytes at inputPtr() (if the caller copied them there), i.e.
//         the caller's own payload
//
// Counters (`countersPtr()`, five u64): completed, duplicates, inconsistent,
// oversized, evicted; the same meaning as ReassemblyCounters.

/** Largest fragment count of one send (MAX_FRAGMENTS in src/mcdist/frame.ts). */
// @ts-ignore: decorator
@inline const MAX_FRAGMENTS: u32 = 64;

// @ts-ignore: decorator
@inline const PENDING: i32 = -1;
// @ts-ignore: decorator
@inline const DUPLICATE: i32 = -2;
// @ts-ignore: decorator
@inline const INCONSISTENT: i32 = -3;
// @ts-ignore: decorator
@inline const OVERSIZED: i32 = -4;
// @ts-ignore: decorator
@inline const COMPLETE_INPUT: i32 = -5;

// Counter offsets (u64 each) in the counters block.
// @ts-ignore: decorator
@inline const C_COMPLETED: usize = 0;
// @ts-ignore: decorator
@inline const C_DUPLICATES: usize = 8;
// @ts-ignore: decorator
@inline const C_INCONSISTENT: usize = 16;
// @ts-ignore: decorator
@inline const C_OVERSIZED: usize = 24;
// @ts-ignore: decorator
@inline const C_EVICTED: usize = 32;
// @ts-ignore: decorator
@inline const COUNTERS_BYTES: usize = 48;

// Slot header fields (byte offsets); one header is HEADER_BYTES long.
// @ts-ignore: decorator
@inline const H_OBJECT: usize = 0; // u64 object number
// @ts-ignore: decorator
@inline const H_MASK: usize = 8; // u64 received fragments, bit i = fragment i
// @ts-ignore: decorator
@inline const H_SEQUENCE: usize = 16; // u32
// @ts-ignore: decorator
@inline const H_HASH: usize = 20; // u32 hash of (object, sequence)
// @ts-ignore: decorator
@inline const H_COUNT: usize = 24; // u32 fragment count of the send
// @ts-ignore: decorator
@inline const H_BYTES: usize = 28; // u32 bytes held (= bytes appended)
// @ts-ignore: decorator
@inline const H_PREV: usize = 32; // i32 older slot in age order, -1 none
// @ts-ignore: decorator
@inline const H_NEXT: usize = 36; // i32 newer slot in age order, -1 none
// @ts-ignore: decorator
@inline const H_STATE: usize = 40; // u32 FREE / PARTIAL / DONE
// @ts-ignore: decorator
@inline const H_FLAGS: usize = 44; // u32 F_* bits
// @ts-ignore: decorator
@inline const HEADER_BYTES: usize = 64;

// @ts-ignore: decorator
@inline const FREE: u32 = 0;
// @ts-ignore: decorator
@inline const PARTIAL: u32 = 1;
// @ts-ignore: decorator
@inline const DONE: u32 = 2;

/** Set while every fragment so far arrived in index order (data area = object prefix). */
// @ts-ignore: decorator
@inline const F_IN_ORDER: u32 = 1;
/** Set on a completed slot whose object was gathered into the output buffer. */
// @ts-ignore: decorator
@inline const F_GATHERED: u32 = 2;

/** Fragment-table bytes per slot: (u32 offset, u32 length) per fragment. */
// @ts-ignore: decorator
@inline const FRAGS_BYTES: usize = <usize>MAX_FRAGMENTS << 3;

/** Largest total allocation accepted by `init` (bytes). */
// @ts-ignore: decorator
@inline const MAX_STATE_BYTES: u64 = 512 << 20;

// ---------------------------------------------------------------------------
// State (set by init)

let nslots: u32 = 0;
let maxBytes: u32 = 0;
let dataStride: usize = 0;
let block: usize = 0;
let headers: usize = 0;
let frags: usize = 0;
let data: usize = 0;
let input: usize = 0;
let output: usize = 0;
let table: usize = 0;
let tableMask: u32 = 0;
let freeStack: usize = 0;
let freeTop: u32 = 0;
let counters: usize = 0;
let oldest: i32 = -1;
let newest: i32 = -1;
let live: u32 = 0;
let lastDone: i32 = -1;

// @ts-ignore: decorator
@inline function align16(n: u64): u64 {
  return (n + 15) & ~(<u64>15);
}

// @ts-ignore: decorator
@inline function header(slot: i32): usize {
  return headers + (<usize>slot) * HEADER_BYTES;
}

// @ts-ignore: decorator
@inline function slotData(slot: i32): usize {
  return data + (<usize>slot) * dataStride;
}

// @ts-ignore: decorator
@inline function fragEntry(slot: i32, fragment: u32): usize {
  return frags + (<usize>slot) * FRAGS_BYTES + ((<usize>fragment) << 3);
}

// @ts-ignore: decorator
@inline function bump(counter: usize): void {
  const p = counters + counter;
  store<u64>(p, load<u64>(p) + 1);
}

/** 32-bit hash of (object, sequence): MurmurHash3's 64-bit finalizer. */
// @ts-ignore: decorator
@inline function hashKey(object: u64, sequence: u32): u32 {
  let h = object ^ ((<u64>sequence) * 0x9E37_79B9_7F4A_7C15);
  h ^= h >>> 33;
  h *= 0xFF51_AFD7_ED55_8CCD;
  h ^= h >>> 33;
  h *= 0xC4CE_B9FE_1A85_EC53;
  h ^= h >>> 33;
  return <u32>h;
}

// @ts-ignore: decorator
@inline function tableAt(i: u32): usize {
  return table + ((<usize>i) << 2);
}

// ---------------------------------------------------------------------------
// Hash table: entries are slot + 1 (0 = empty).

function find(hash: u32, object: u64, sequence: u32): i32 {
  let i = hash & tableMask;
  while (true) {
    const e = load<u32>(tableAt(i));
    if (e == 0) return -1;
    const slot = <i32>(e - 1);
    const h = header(slot);
    if (load<u32>(h, H_HASH) == hash && load<u64>(h, H_OBJECT) == object && load<u32>(h, H_SEQUENCE) == sequence) {
      return slot;
    }
    i = (i + 1) & tableMask;
  }
}

function tableInsert(slot: i32, hash: u32): void {
  let i = hash & tableMask;
  while (load<u32>(tableAt(i)) != 0) i = (i + 1) & tableMask;
  store<u32>(tableAt(i), <u32>slot + 1);
}

function tableRemove(slot: i32): void {
  const want = <u32>slot + 1;
  let hole = load<u32>(header(slot), H_HASH) & tableMask;
  while (load<u32>(tableAt(hole)) != want) hole = (hole + 1) & tableMask;
  // Backward-shift deletion: move later entries of the probe run into the
  // hole when the hole lies on their probe path [home, j].
  let j = hole;
  while (true) {
    j = (j + 1) & tableMask;
    const e = load<u32>(tableAt(j));
    if (e == 0) break;
    const home = load<u32>(header(<i32>(e - 1)), H_HASH) & tableMask;
    if (((j - home) & tableMask) >= ((j - hole) & tableMask)) {
      store<u32>(tableAt(hole), e);
      hole = j;
    }
  }
  store<u32>(tableAt(hole), 0);
}

// ---------------------------------------------------------------------------
// Age list (oldest .. newest) and free stack

function listAppend(slot: i32): void {
  const h = header(slot);
  store<i32>(h, newest, H_PREV);
  store<i32>(h, -1, H_NEXT);
  if (newest >= 0) store<i32>(header(newest), slot, H_NEXT);
  else oldest = slot;
  newest = slot;
}

function listUnlink(slot: i32): void {
  const h = header(slot);
  const prev = load<i32>(h, H_PREV);
  const next = load<i32>(h, H_NEXT);
  if (prev >= 0) store<i32>(header(prev), next, H_NEXT);
  else oldest = next;
  if (next >= 0) store<i32>(header(next), prev, H_PREV);
  else newest = prev;
}

function pushFree(slot: i32): void {
  store<u32>(header(slot), FREE, H_STATE);
  store<i32>(freeStack + ((<usize>freeTop) << 2), slot);
  freeTop++;
}

/** Takes a partial slot out of the table and the age list (not onto the free stack). */
function detach(slot: i32): void {
  tableRemove(slot);
  listUnlink(slot);
  live--;
}

/** Drops a partial slot. */
function drop(slot: i32): void {
  detach(slot);
  pushFree(slot);
}

/** Gathers a completed, out-of-order slot's fragments in index order into the output buffer. */
function gather(slot: i32, count: u32): void {
  const src = slotData(slot);
  let at = output;
  for (let f: u32 = 0; f < count; f++) {
    const e = fragEntry(slot, f);
    const length = <usize>load<u32>(e, 4);
    memory.copy(at, src + <usize>load<u32>(e), length);
    at += length;
  }
}

// ---------------------------------------------------------------------------
// Exports

/**
 * Allocates the state for `slots` partial sends of up to `maxObjectBytes`
 * bytes each and clears every counter. Returns 1, or 0 if the state would
 * exceed 512 MiB. Meant to be called once per instance (a second call frees
 * the previous state).
 */
export function init(slots: u32, maxObjectBytes: u32): i32 {
  const stride = align16(<u64>maxObjectBytes);
  let tableSize: u64 = 2;
  while (tableSize < (<u64>slots) << 1) tableSize <<= 1;
  const scratch = stride < 16 ? 16 : stride;
  const total: u64 =
    (<u64>slots) * (<u64>HEADER_BYTES + <u64>FRAGS_BYTES + stride) + // headers, fragment tables, data
    2 * scratch + // input, output
    tableSize * 4 + align16((<u64>slots) * 4) + // hash table, free stack
    <u64>COUNTERS_BYTES;
  if (total > MAX_STATE_BYTES) return 0;
  if (block != 0) heap.free(block);
  block = heap.alloc(<usize>total);
  memory.fill(block, 0, <usize>total);

  nslots = slots;
  maxBytes = maxObjectBytes;
  dataStride = <usize>stride;
  headers = block;
  frags = headers + (<usize>slots) * HEADER_BYTES;
  data = frags + (<usize>slots) * FRAGS_BYTES;
  input = data + (<usize>slots) * dataStride;
  output = input + <usize>scratch;
  table = output + <usize>scratch;
  tableMask = <u32>tableSize - 1;
  freeStack = table + <usize>(tableSize * 4);
  counters = freeStack + <usize>align16((<u64>slots) * 4);
  clear();
  return 1;
}

/** Forgets every send in progress (and any completed, unreleased slot). Counters are kept. */
export function clear(): void {
  memory.fill(table, 0, (<usize>tableMask + 1) << 2);
  freeTop = 0;
  // Push in reverse so that slots are handed out from 0 upwards.
  for (let s = <i32>nslots - 1; s >= 0; s--) pushFree(s);
  oldest = -1;
  newest = -1;
  live = 0;
  lastDone = -1;
}

/** Scratch buffer of max(maxObjectBytes, 16) bytes for the payload passed to `add`. */
export function inputPtr(): usize {
  return input;
}

/** The five u64 counters: completed, duplicates, inconsistent, oversized, evicted. */
export function countersPtr(): usize {
  return counters;
}

/** Sends in progress. */
export function pending(): u32 {
  return live;
}

/**
 * Adds one fragment whose `length` payload bytes are at inputPtr(); returns a
 * status code (see the top of this file). Releases the slot completed by the
 * previous call, if it was not released yet.
 */
export function add(object: u64, sequence: u32, fragment: u32, fragments: u32, length: u32): i32 {
  if (lastDone >= 0) release(lastDone);

  if (fragments == 1) {
    if (fragment != 0) {
      bump(C_INCONSISTENT);
      return INCONSISTENT;
    }
    if (length > maxBytes) {
      bump(C_OVERSIZED);
      return OVERSIZED;
    }
    bump(C_COMPLETED);
    return COMPLETE_INPUT;
  }

  const hash = hashKey(object, sequence);
  let slot = find(hash, object, sequence);
  if (slot < 0) {
    if (fragment >= fragments || fragments > MAX_FRAGMENTS) {
      bump(C_INCONSISTENT);
      return INCONSISTENT;
    }
    if (nslots == 0) {
      // No room at all: the new send is evicted at once (as the reference
      // does with maxPartial 0), after its size is checked.
      bump(C_EVICTED);
      if (length > maxBytes) {
        bump(C_OVERSIZED);
        return OVERSIZED;
      }
      return PENDING;
    }
    if (freeTop == 0) {
      // Full: evict the oldest send. (Only partial slots are ever missing
      // from the free stack here: a completed slot was released above.)
      drop(oldest);
      bump(C_EVICTED);
    }
    freeTop--;
    slot = load<i32>(freeStack + ((<usize>freeTop) << 2));
    const h = header(slot);
    store<u64>(h, object, H_OBJECT);
    store<u64>(h, 0, H_MASK);
    store<u32>(h, sequence, H_SEQUENCE);
    store<u32>(h, hash, H_HASH);
    store<u32>(h, fragments, H_COUNT);
    store<u32>(h, 0, H_BYTES);
    store<u32>(h, PARTIAL, H_STATE);
    store<u32>(h, F_IN_ORDER, H_FLAGS);
    tableInsert(slot, hash);
    listAppend(slot);
    live++;
  } else if (load<u32>(header(slot), H_COUNT) != fragments || fragment >= fragments) {
    bump(C_INCONSISTENT);
    return INCONSISTENT;
  }

  const h = header(slot);
  const mask = load<u64>(h, H_MASK);
  const bit: u64 = (<u64>1) << (<u64>fragment);
  if ((mask & bit) != 0) {
    bump(C_DUPLICATES);
    return DUPLICATE;
  }
  const held = load<u32>(h, H_BYTES);
  const total = <u64>held + <u64>length;
  if (total > <u64>maxBytes) {
    drop(slot);
    bump(C_OVERSIZED);
    return OVERSIZED;
  }
  memory.copy(slotData(slot) + <usize>held, input, <usize>length);
  const e = fragEntry(slot, fragment);
  store<u32>(e, held);
  store<u32>(e, length, 4);
  const have = <u32>popcnt<u64>(mask);
  let flags = load<u32>(h, H_FLAGS);
  if (fragment != have) flags &= ~F_IN_ORDER;
  store<u64>(h, mask | bit, H_MASK);
  store<u32>(h, <u32>total, H_BYTES);
  if (have + 1 < fragments) {
    store<u32>(h, flags, H_FLAGS);
    return PENDING;
  }

  detach(slot);
  if ((flags & F_IN_ORDER) == 0) {
    gather(slot, fragments);
    flags |= F_GATHERED;
  }
  store<u32>(h, flags, H_FLAGS);
  store<u32>(h, DONE, H_STATE);
  lastDone = slot;
  bump(C_COMPLETED);
  return slot;
}

/** Address of a completed slot's object (valid until release / the next add / clear). */
export function objectPtr(slot: i32): usize {
  return (load<u32>(header(slot), H_FLAGS) & F_GATHERED) != 0 ? output : slotData(slot);
}

/** Length in bytes of a completed slot's object. */
export function objectLength(slot: i32): u32 {
  return load<u32>(header(slot), H_BYTES);
}

/** Returns a completed slot to the free stack; ignored for any other slot. */
export function release(slot: i32): void {
  if (slot < 0 || <u32>slot >= nslots) return;
  if (load<u32>(header(slot), H_STATE) != DONE) return;
  pushFree(slot);
  if (lastDone == slot) lastDone = -1;
}
