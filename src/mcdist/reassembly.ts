/**
 * Fragment reassembly for mcdist objects. Frames arrive in any order, some twice, some never; one
 * send of one object (same object number and sequence) is reassembled on its own, so a forger's
 * fragments cannot mix into the server's. The number of objects in progress and their size are
 * bounded (oldest evicted first): a flood of partial objects costs a bounded amount of memory.
 */
import type { Frame } from "./frame.ts";

export interface ReassemblyOptions {
  /** Objects in progress at once; the oldest is dropped beyond this. */
  maxPartial: number;
  /** Largest object accepted (bytes); a send that grows beyond it is dropped. */
  maxObjectBytes: number;
}

export interface ReassemblyCounters {
  completed: number;
  /** A fragment that was already held. */
  duplicates: number;
  /** A fragment whose fragment count disagrees with the others of its send. */
  inconsistent: number;
  /** Sends dropped for growing beyond maxObjectBytes. */
  oversized: number;
  /** Partial sends dropped to make room. */
  evicted: number;
}

interface Partial {
  parts: Array<Uint8Array | undefined>;
  have: number;
  bytes: number;
}

export class Reassembly {
  readonly counters: ReassemblyCounters = { completed: 0, duplicates: 0, inconsistent: 0, oversized: 0, evicted: 0 };
  /** Insertion order is age order: the first entry is the oldest. */
  private readonly partial = new Map<string, Partial>();

  constructor(private readonly options: ReassemblyOptions) {}

  /** Objects in progress. */
  get pending(): number {
    return this.partial.size;
  }

  /** Adds one frame; returns the whole object's bytes when this frame completed it (a copy here; WasmReassembly's is a view until its next add). */
  add(frame: Frame): Uint8Array | undefined {
    if (frame.fragments === 1) {
      if (frame.fragment !== 0) return void this.counters.inconsistent++;
      if (frame.payload.byteLength > this.options.maxObjectBytes) return void this.counters.oversized++;
      this.counters.completed++;
      return frame.payload.slice();
    }
    const key = `${frame.object}/${frame.sequence}`;
    let entry = this.partial.get(key);
    if (entry === undefined) {
      if (frame.fragment >= frame.fragments) return void this.counters.inconsistent++;
      entry = { parts: new Array(frame.fragments).fill(undefined), have: 0, bytes: 0 };
      this.partial.set(key, entry);
      this.evictBeyondLimit();
    }
    if (entry.parts.length !== frame.fragments || frame.fragment >= frame.fragments) return void this.counters.inconsistent++;
    if (entry.parts[frame.fragment] !== undefined) return void this.counters.duplicates++;
    entry.bytes += frame.payload.byteLength;
    if (entry.bytes > this.options.maxObjectBytes) {
      this.partial.delete(key);
      return void this.counters.oversized++;
    }
    entry.parts[frame.fragment] = frame.payload.slice();
    if (++entry.have < entry.parts.length) return undefined;
    this.partial.delete(key);
    const out = new Uint8Array(entry.bytes);
    let at = 0;
    for (const part of entry.parts) {
      out.set(part!, at);
      at += part!.byteLength;
    }
    this.counters.completed++;
    return out;
  }

  /** Forgets every object in progress (e.g. when they can no longer be wanted). */
  clear(): void {
    this.partial.clear();
  }

  private evictBeyondLimit(): void {
    while (this.partial.size > this.options.maxPartial) {
      const oldest = this.partial.keys().next().value as string;
      this.partial.delete(oldest);
      this.counters.evicted++;
    }
  }
}
