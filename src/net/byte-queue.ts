/**
 * Bytes received on a connection and not yet consumed, counted in bytes. Chunks are kept as they
 * came and joined only when a whole message is taken, so a large message arriving in many chunks
 * is copied once, not once per chunk.
 */
export class ByteQueue {
  private chunks: Buffer[] = [];
  /** Bytes from the front already searched by indexOf without finding its byte. */
  private scanned = 0;
  byteLength = 0;

  push(chunk: Uint8Array): void {
    if (chunk.byteLength === 0) return;
    // A copy: the socket layer may reuse the buffer it handed us.
    this.chunks.push(Buffer.from(chunk));
    this.byteLength += chunk.byteLength;
  }

  /** Position of the first `byte`, or -1; a repeated search starts where the last one stopped. */
  indexOf(byte: number): number {
    let base = 0;
    for (const chunk of this.chunks) {
      if (base + chunk.byteLength > this.scanned) {
        const at = chunk.indexOf(byte, Math.max(0, this.scanned - base));
        if (at >= 0) return base + at;
      }
      base += chunk.byteLength;
    }
    this.scanned = base;
    return -1;
  }

  /** The first `n` bytes, left in the queue (n at most byteLength). */
  peek(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    if (this.chunks[0]!.byteLength < n) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0]!.subarray(0, n);
  }

  /** Removes and returns the first `n` bytes (n at most byteLength). */
  take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const out = this.peek(n);
    const first = this.chunks[0]!;
    if (first.byteLength === n) this.chunks.shift();
    else this.chunks[0] = first.subarray(n);
    this.byteLength -= n;
    this.scanned = Math.max(0, this.scanned - n);
    return out;
  }

  clear(): void {
    this.chunks = [];
    this.byteLength = 0;
    this.scanned = 0;
  }
}

/** Bytes of the first newline-terminated line in `queue` (newline included), or undefined until one has arrived. */
export function lineLength(queue: ByteQueue): number | undefined {
  const newline = queue.indexOf(0x0a);
  return newline < 0 ? undefined : newline + 1;
}
