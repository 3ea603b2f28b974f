/**
 * Every listening socket of snowflock (the agent's TCP port, the memory server's TCP and Unix
 * sockets, a VMM's control socket) is served through here, so that a peer that has not proven who
 * it is costs the process little memory, and only briefly:
 * - input is counted in bytes (Buffers), never as decoded text;
 * - before it authenticates a connection may buffer at most `preAuthBytes`, and it must
 *   authenticate within `authDeadlineMs` of opening. That is a deadline, not an idle timer, so
 *   trickling one byte at a time buys a slow peer nothing;
 * - once authenticated, one message may have up to `messageBytes`, and a connection that neither
 *   sends nor reads for `idleMs`, while none of its messages is being answered, is closed;
 * - at most `maxConnections` are open. One more evicts the unauthenticated connection that has
 *   been silent longest (a flood of silent connections cannot lock out a peer that authenticates at
 *   once), or is closed itself when every open connection has authenticated;
 * - answers a peer does not read are queued up to `maxOutboundBytes`, then it is cut off.
 * The protocol frames messages (how long the next one is) and says when a peer has authenticated.
 */
import type { Socket, SocketHandler } from "bun";
import { ByteQueue } from "./byte-queue.ts";

export interface ListenerLimits {
  maxConnections: number;
  preAuthBytes: number;
  authDeadlineMs: number;
  messageBytes: number;
  /** Undefined: an authenticated connection may stay silent (a clone's memtap holds one for its life). */
  idleMs: number | undefined;
  maxOutboundBytes: number;
}

export interface Connection<S> {
  state: S;
  readonly authenticated: boolean;
  /** The peer proved who it is: the larger message limit and the idle timeout apply from now on. */
  authenticate(): void;
  write(bytes: string | Uint8Array): void;
  /** Sends `last` (if given), then closes once everything queued has gone out. */
  close(last?: string | Uint8Array): void;
}

export interface ListenerProtocol<S> {
  /** The new connection's state; a protocol whose socket is authenticated by its file mode authenticates here. */
  open(connection: Connection<S>): S;
  /** Bytes of the next message once its first bytes tell (it may not all have arrived yet). Throws on garbage. */
  messageLength(connection: Connection<S>, pending: ByteQueue): number | undefined;
  /** One whole message. A promise keeps the connection busy (its timers wait) until it settles. */
  message(connection: Connection<S>, bytes: Buffer): void | Promise<void>;
  /** What a peer is told when its connection is closed for `reason`, if anything. */
  refusal(reason: string): string | Uint8Array | undefined;
}

export type ListenAddress = { hostname: string; port: number } | { unix: string };

export interface BoundedListener {
  port: number;
  /** Connections open now. */
  connections(): number;
  stop(): void;
}

interface Tracked<S> extends Connection<S> {
  socket: Socket<undefined>;
  pending: ByteQueue;
  outbound: Buffer[];
  outboundBytes: number;
  openedAt: number;
  lastActive: number;
  busy: boolean;
  closing: boolean;
  gone: boolean;
  isAuthenticated: boolean;
}

const SWEEP_MIN_MS = 20;
const SWEEP_MAX_MS = 1000;

export function listenBounded<S>(address: ListenAddress, limits: ListenerLimits, protocol: ListenerProtocol<S>): BoundedListener {
  const open = new Map<Socket<undefined>, Tracked<S>>();

  const forget = (c: Tracked<S>) => {
    if (c.gone) return;
    c.gone = true;
    open.delete(c.socket);
    c.pending.clear();
    c.outbound = [];
  };

  /** Closes at once, telling the peer why when the protocol has words for it. */
  const refuse = (c: Tracked<S>, reason: string) => {
    if (c.gone) return;
    const last = protocol.refusal(reason);
    if (last === undefined) c.socket.terminate();
    else c.socket.end(last);
    forget(c);
  };

  const flush = (c: Tracked<S>) => {
    while (c.outbound.length > 0) {
      const next = c.outbound[0]!;
      const written = Math.max(c.socket.write(next), 0);
      c.outboundBytes -= written;
      if (written < next.byteLength) {
        c.outbound[0] = next.subarray(written);
        return;
      }
      c.outbound.shift();
    }
    if (c.closing) {
      c.socket.end();
      forget(c);
    }
  };

  const limitOf = (c: Tracked<S>) => (c.isAuthenticated ? limits.messageBytes : limits.preAuthBytes);

  /** Hands over every whole message received so far, one at a time. */
  const pump = (c: Tracked<S>) => {
    while (!c.gone && !c.closing && !c.busy) {
      let length: number | undefined;
      try {
        length = protocol.messageLength(c, c.pending);
      } catch (error) {
        return refuse(c, (error as Error).message);
      }
      if ((length ?? c.pending.byteLength) > limitOf(c)) return refuse(c, "request too large");
      if (length === undefined || length > c.pending.byteLength) return;
      let result: void | Promise<void>;
      try {
        result = protocol.message(c, c.pending.take(length));
      } catch (error) {
        return refuse(c, (error as Error).message);
      }
      if (result instanceof Promise) {
        c.busy = true;
        result.then(
          () => {
            c.busy = false;
            c.lastActive = performance.now();
            pump(c);
          },
          (error: Error) => refuse(c, error.message),
        );
      }
    }
    // A peer that keeps sending while its last message is being answered is held to the same limit.
    if (!c.gone && c.pending.byteLength > limitOf(c)) refuse(c, "request too large");
  };

  /** Room for one more: the longest-silent unauthenticated connection goes; false if there is none. */
  const makeRoom = (): boolean => {
    let victim: Tracked<S> | undefined;
    for (const c of open.values()) if (!c.isAuthenticated && !c.busy && (!victim || c.lastActive < victim.lastActive)) victim = c;
    if (victim) refuse(victim, "too many connections");
    return victim !== undefined;
  };

  const sweep = setInterval(
    () => {
      const now = performance.now();
      for (const c of open.values()) {
        if (c.busy) continue;
        if (!c.isAuthenticated && now - c.openedAt > limits.authDeadlineMs) refuse(c, "no authenticated request in time");
        else if (c.isAuthenticated && limits.idleMs !== undefined && now - c.lastActive > limits.idleMs) refuse(c, "idle for too long");
      }
    },
    Math.min(SWEEP_MAX_MS, Math.max(SWEEP_MIN_MS, Math.min(limits.authDeadlineMs, limits.idleMs ?? Infinity) / 4)),
  );
  sweep.unref();

  const handlers: SocketHandler<undefined> = {
    open(socket) {
      const now = performance.now();
      const c: Tracked<S> = {
        socket,
        state: undefined as S,
        pending: new ByteQueue(),
        outbound: [],
        outboundBytes: 0,
        openedAt: now,
        lastActive: now,
        busy: false,
        closing: false,
        gone: false,
        isAuthenticated: false,
        get authenticated() {
          return c.isAuthenticated;
        },
        authenticate() {
          c.isAuthenticated = true;
          c.lastActive = performance.now();
        },
        write(bytes) {
          if (c.gone) return;
          const data = typeof bytes === "string" ? Buffer.from(bytes) : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
          if (c.outbound.length === 0) {
            const written = Math.max(socket.write(data), 0);
            if (written === data.byteLength) return;
            c.outbound.push(data.subarray(written));
            c.outboundBytes += data.byteLength - written;
          } else {
            c.outbound.push(data);
            c.outboundBytes += data.byteLength;
          }
          if (c.outboundBytes > limits.maxOutboundBytes) refuse(c, "answers not read");
        },
        close(last) {
          if (c.gone) return;
          if (last !== undefined) c.write(last);
          c.closing = true;
          flush(c);
        },
      };
      if (open.size >= limits.maxConnections && !makeRoom()) {
        // Every open connection has authenticated: the newcomer waits for another try.
        const last = protocol.refusal("too many connections");
        if (last === undefined) socket.terminate();
        else socket.end(last);
        return;
      }
      open.set(socket, c);
      c.state = protocol.open(c);
    },
    data(socket, chunk) {
      const c = open.get(socket);
      if (!c || c.closing) return;
      c.lastActive = performance.now();
      c.pending.push(chunk);
      pump(c);
    },
    drain(socket) {
      const c = open.get(socket);
      if (!c) return;
      c.lastActive = performance.now();
      flush(c);
    },
    close(socket) {
      const c = open.get(socket);
      if (c) forget(c);
    },
    error(socket) {
      const c = open.get(socket);
      if (c) forget(c);
    },
  };
  const server = "unix" in address ? Bun.listen({ unix: address.unix, socket: handlers }) : Bun.listen({ ...address, socket: handlers });

  return {
    port: "port" in server ? server.port : 0,
    connections: () => open.size,
    stop() {
      clearInterval(sweep);
      server.stop(true);
      for (const c of [...open.values()]) {
        c.socket.terminate();
        forget(c);
      }
    },
  };
}
