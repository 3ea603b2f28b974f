/**
 * A connection flood, as a peer without the secret can make one: `count` TCP connections to a
 * loopback port, each sending `burst` at once and then `slow` one byte per tick. Records when the
 * server closed each and what it said first.
 */
import type { Socket } from "bun";

export interface FloodPeer {
  /** performance.now() when the server closed it. */
  closedAt?: number;
  received: Buffer;
}

export interface Flood {
  peers: FloodPeer[];
  /** Peers the server has not closed (yet, or before stop). */
  open(): number;
  /** Closes what is still open and stops the ticks; what it closes still counts as open. */
  stop(): void;
}

export interface FloodOptions {
  port: number;
  count: number;
  burst: Uint8Array;
  slow: Uint8Array;
  tickMs: number;
}

export async function flood(options: FloodOptions): Promise<Flood> {
  const peers: FloodPeer[] = [];
  let stopped = false;
  const closed = (peer: FloodPeer) => {
    if (!stopped) peer.closedAt ??= performance.now();
  };
  const sockets: Array<{ socket: Socket<undefined>; peer: FloodPeer; pending: Uint8Array; slowAt: number }> = [];
  const push = (s: (typeof sockets)[number]) => {
    if (s.pending.byteLength > 0) s.pending = s.pending.subarray(Math.max(0, s.socket.write(s.pending)));
  };
  await Promise.all(
    Array.from({ length: options.count }, async () => {
      const peer: FloodPeer = { received: Buffer.alloc(0) };
      peers.push(peer);
      const entry = { peer, pending: options.burst, slowAt: 0 } as (typeof sockets)[number];
      entry.socket = await Bun.connect({
        hostname: "127.0.0.1",
        port: options.port,
        socket: {
          data: (_s, chunk) => void (peer.received = Buffer.concat([peer.received, chunk])),
          drain: () => push(entry),
          close: () => closed(peer),
          error: () => closed(peer),
        },
      });
      sockets.push(entry);
      push(entry);
    }),
  );
  const tick = setInterval(() => {
    for (const s of sockets) {
      if (s.peer.closedAt !== undefined || s.pending.byteLength > 0 || s.slowAt >= options.slow.byteLength) continue;
      s.socket.write(options.slow.subarray(s.slowAt, s.slowAt + 1));
      s.slowAt++;
    }
  }, options.tickMs);
  return {
    peers,
    open: () => peers.filter((p) => p.closedAt === undefined).length,
    stop() {
      stopped = true;
      clearInterval(tick);
      for (const s of sockets) if (s.peer.closedAt === undefined) s.socket.terminate();
    },
  };
}
