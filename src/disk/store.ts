/**
 * What a virtio block device reads and writes: the image itself, or a clone's copy-on-write view
 * of a frozen image. A clone writes 4 KiB chunks into an overlay of its own (an unnamed file, gone
 * with the clone), so the frozen image, and the user's image it was copied from, are never
 * written by a clone. Which chunks are in the overlay is a bitmap every vCPU thread shares.
 */
import { withSpinLock } from "../spin-lock.ts";
import { fsyncSync } from "node:fs";
import { readFully, writeFully } from "./copy.ts";

export const OVERLAY_CHUNK_BYTES = 4096;
/** Word 0 of the shared words is the copy-up lock; the chunk bits follow. */
const LOCK = 0;
const FIRST_BITS_WORD = 1;

/** A clone's overlay as every thread sees it: its file and the shared chunk bits. */
export interface OverlayShare {
  fd: number;
  words: SharedArrayBuffer;
}

/** A disk as the threads of one VMM share it (structured-cloneable). */
export interface SharedDisk {
  /** The image, or the frozen image under an overlay. */
  fd: number;
  bytes: number;
  readOnly: boolean;
  overlay?: OverlayShare;
}

export function newOverlayShare(fd: number, bytes: number): OverlayShare {
  const chunks = Math.ceil(bytes / OVERLAY_CHUNK_BYTES);
  return { fd, words: new SharedArrayBuffer(4 * (FIRST_BITS_WORD + Math.ceil(chunks / 32))) };
}

/** Reads, writes and flushes at byte offsets; a failed host call throws its SyscallError. */
export interface BlockStore {
  read(target: Uint8Array, offset: number): void;
  write(source: Uint8Array, offset: number): void;
  flush(): void;
}

export function openBlockStore(disk: SharedDisk): BlockStore {
  return disk.overlay ? new OverlayStore(disk.fd, disk.bytes, disk.overlay) : new ImageStore(disk.fd, disk.readOnly);
}

class ImageStore implements BlockStore {
  constructor(
    private readonly fd: number,
    private readonly readOnly: boolean,
  ) {}

  read(target: Uint8Array, offset: number): void {
    readFully(this.fd, target, offset);
  }

  write(source: Uint8Array, offset: number): void {
    writeFully(this.fd, source, offset);
  }

  flush(): void {
    if (!this.readOnly) fsyncSync(this.fd);
  }
}

class OverlayStore implements BlockStore {
  private readonly words: Int32Array;

  constructor(
    private readonly base: number,
    private readonly bytes: number,
    private readonly overlay: OverlayShare,
  ) {
    this.words = new Int32Array(overlay.words);
  }

  private has(chunk: number): boolean {
    return (Atomics.load(this.words, FIRST_BITS_WORD + (chunk >>> 5)) & (1 << (chunk & 31))) !== 0;
  }

  private mark(chunk: number): void {
    Atomics.or(this.words, FIRST_BITS_WORD + (chunk >>> 5), 1 << (chunk & 31));
  }

  /** Runs of whole or partial chunks in [offset, offset + length), each from one side. */
  private *runs(offset: number, length: number): Generator<{ at: number; length: number; inOverlay: boolean }> {
    let at = offset;
    const end = offset + length;
    while (at < end) {
      const inOverlay = this.has(Math.floor(at / OVERLAY_CHUNK_BYTES));
      let next = Math.min(end, (Math.floor(at / OVERLAY_CHUNK_BYTES) + 1) * OVERLAY_CHUNK_BYTES);
      while (next < end && this.has(next / OVERLAY_CHUNK_BYTES) === inOverlay) next = Math.min(end, next + OVERLAY_CHUNK_BYTES);
      yield { at, length: next - at, inOverlay };
      at = next;
    }
  }

  read(target: Uint8Array, offset: number): void {
    for (const run of this.runs(offset, target.byteLength))
      readFully(run.inOverlay ? this.overlay.fd : this.base, target.subarray(run.at - offset, run.at - offset + run.length), run.at);
  }

  write(source: Uint8Array, offset: number): void {
    const end = offset + source.byteLength;
    for (let at = offset; at < end; ) {
      const chunk = Math.floor(at / OVERLAY_CHUNK_BYTES);
      const chunkStart = chunk * OVERLAY_CHUNK_BYTES;
      const chunkEnd = Math.min(chunkStart + OVERLAY_CHUNK_BYTES, this.bytes);
      const pieceEnd = Math.min(end, chunkEnd);
      const piece = source.subarray(at - offset, pieceEnd - offset);
      if (this.has(chunk) || (at === chunkStart && pieceEnd === chunkEnd)) {
        writeFully(this.overlay.fd, piece, at);
        this.mark(chunk);
      } else this.copyUp(chunk, chunkStart, chunkEnd, piece, at);
      at = pieceEnd;
    }
  }

  /** A partial write to a chunk not yet in the overlay: the rest of it comes from the frozen image. */
  private copyUp(chunk: number, chunkStart: number, chunkEnd: number, piece: Uint8Array, at: number): void {
    withSpinLock(this.words, LOCK, () => {
      if (!this.has(chunk)) {
        const whole = new Uint8Array(chunkEnd - chunkStart);
        readFully(this.base, whole, chunkStart);
        whole.set(piece, at - chunkStart);
        writeFully(this.overlay.fd, whole, chunkStart);
        this.mark(chunk);
      } else writeFully(this.overlay.fd, piece, at);
    });
  }

  // The overlay dies with the clone: nothing it holds has to reach stable storage.
  flush(): void {}

  /** Each run of chunks in the overlay: [offset, length]. */
  *overlaidRanges(): Generator<[number, number]> {
    for (const run of this.runs(0, this.bytes)) if (run.inOverlay) yield [run.at, run.length];
  }
}

/** The chunks a clone has written, as byte ranges (to freeze its disk for its own clones). */
export function overlaidRanges(disk: SharedDisk): Array<[number, number]> {
  if (!disk.overlay) return [];
  return [...new OverlayStore(disk.fd, disk.bytes, disk.overlay).overlaidRanges()];
}
