/**
 * The parent side of memory-on-demand: serves pages of a frozen memory image to any number of
 * clones over a Unix socket, and over TCP (token required) for clones on other hosts. It is an async socket server, so it can live in the parent VMM's
 * event loop; pages are read from a read-only shared mapping of the image, so serving one costs a
 * memcpy and no syscall.
 */
import { fstatSync, rmSync } from "node:fs";
import { randomBytes, timingSafeEqual } from "node:crypto";
import type { Socket, SocketHandler } from "bun";
import { SnowflockError } from "../errors.ts";
import { MAP_SHARED, O_RDONLY, PROT_READ } from "../sys/constants.ts";
import { close, open } from "../sys/files.ts";
import { mmap, munmap, view } from "../sys/memory.ts";
import { type MemoryLayout, PAGE_SIZE } from "./layout.ts";
import {
  decodeHeader,
  decodeHello,
  decodePageRequest,
  encodeError,
  encodeHelloReply,
  encodeMessage,
  encodePageData,
  ErrorKind,
  HEADER_SIZE,
  MessageType,
  PROTOCOL_VERSION,
  ProtocolError,
  TOKEN_BYTES,
  verifyChecksum,
} from "./page-protocol.ts";
import type { PageServerAddress } from "./page-server-address.ts";

export interface MemoryServerOptions {
  /** The frozen image, e.g. /proc/PID/fd/N of the parent's memfd; or give imageFd. */
  imagePath?: string;
  /** An open fd of the image; the server does not close it. */
  imageFd?: number;
  layout: MemoryLayout;
  socketPath: string;
  /** Also listen on TCP at this address (an ephemeral port), for clones on other hosts; they must present the token. */
  tcpAddress?: string;
}

export interface MemoryServerStats {
  pagesServed: number;
  bytesSent: number;
  /** Answers sent (HelloReply, PageData, Error). */
  messagesSent: number;
  requests: number;
  clients: number;
  /** Requests answered with an Error message (bad message, page out of range, ...). */
  errors: number;
}

export interface MemoryServer {
  socketPath: string;
  /** Where clones on other hosts reach it (with its token), when it listens on TCP. */
  tcp?: PageServerAddress & { kind: "tcp" };
  stats(): MemoryServerStats;
  close(): void;
}

/** Per-connection state: bytes received but not yet parsed, bytes not yet written. */
interface Connection {
  /** Over TCP the Hello must carry the server's token. */
  needsToken: boolean;
  inbound: Uint8Array;
  helloDone: boolean;
  outbound: Uint8Array[];
  outboundBytes: number;
}

/** A client that asks faster than it reads is cut off here, not allowed to grow the parent's memory. */
const MAX_OUTBOUND_BYTES = 16 * 1024 * 1024;

export async function startMemoryServer(options: MemoryServerOptions): Promise<MemoryServer> {
  const { layout, socketPath } = options;
  if (options.imageFd === undefined && options.imagePath === undefined) throw new SnowflockError("MEMORY", "the memory server needs an image path or fd");
  const fd = options.imageFd ?? open(options.imagePath!, O_RDONLY);
  const ownsFd = options.imageFd === undefined;
  const imageName = options.imagePath ?? `fd ${fd}`;
  let address = 0;
  try {
    const size = fstatSync(fd).size;
    if (size < layout.size) throw new SnowflockError("MEMORY", `memory image ${imageName} has ${size} bytes, the guest has ${layout.size}`);
    address = mmap(0, layout.size, PROT_READ, MAP_SHARED, fd, 0);
  } catch (error) {
    if (ownsFd) close(fd);
    throw error;
  }
  const image = view(address, layout.size);
  const pageCount = layout.size / PAGE_SIZE;
  const stats: MemoryServerStats = { pagesServed: 0, bytesSent: 0, messagesSent: 0, requests: 0, clients: 0, errors: 0 };
  const sockets = new Set<Socket<Connection>>();
  let closed = false;
  const token = new Uint8Array(randomBytes(TOKEN_BYTES));

  const send = (socket: Socket<Connection>, message: Uint8Array) => {
    stats.bytesSent += message.byteLength;
    stats.messagesSent++;
    const c = socket.data;
    if (c.outbound.length > 0) {
      c.outbound.push(message);
      c.outboundBytes += message.byteLength;
      if (c.outboundBytes > MAX_OUTBOUND_BYTES) socket.terminate();
      return;
    }
    const written = Math.max(socket.write(message), 0);
    if (written < message.byteLength) {
      c.outbound.push(message.subarray(written));
      c.outboundBytes += message.byteLength - written;
    }
  };

  const refuse = (socket: Socket<Connection>, sequence: number, kind: ErrorKind, text: string) => {
    stats.errors++;
    send(socket, encodeMessage(MessageType.Error, sequence, encodeError(kind, text)));
  };

  /** Answers one message; false when the connection is done. */
  const answer = (socket: Socket<Connection>, type: MessageType, sequence: number, payload: Uint8Array): boolean => {
    const c = socket.data;
    if (!c.helloDone) {
      if (type !== MessageType.Hello) throw new ProtocolError(`${MessageType[type]} before Hello`);
      const { version, token: given } = decodeHello(payload);
      if (version !== PROTOCOL_VERSION) {
        refuse(socket, sequence, ErrorKind.UnsupportedVersion, `protocol version ${version} is not supported; this server speaks ${PROTOCOL_VERSION}`);
        return false;
      }
      if (c.needsToken && !(given && timingSafeEqual(given, token))) {
        refuse(socket, sequence, ErrorKind.BadMessage, "this memory server needs its token, and the Hello carried none or another");
        return false;
      }
      c.helloDone = true;
      send(socket, encodeMessage(MessageType.HelloReply, sequence, encodeHelloReply({ version: PROTOCOL_VERSION, pageSize: PAGE_SIZE, pageCount })));
      return true;
    }
    if (type !== MessageType.PageRequest) throw new ProtocolError(`unexpected ${MessageType[type]}`);
    stats.requests++;
    const pages = decodePageRequest(payload);
    const outside = pages.find((p) => p >= pageCount);
    if (outside !== undefined) {
      refuse(socket, sequence, ErrorKind.OutOfRange, `page ${outside} is outside the image (${pageCount} pages)`);
      return true;
    }
    const data = encodePageData(pages, (p) => image.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE));
    stats.pagesServed += pages.length;
    send(socket, encodeMessage(MessageType.PageData, sequence, data));
    return true;
  };

  /** Parses every whole message received so far; a malformed one ends the connection. */
  const receive = (socket: Socket<Connection>, chunk: Uint8Array) => {
    if (closed) return;
    const c = socket.data;
    let buffer = c.inbound.byteLength === 0 ? chunk : concat(c.inbound, chunk);
    let open = true;
    try {
      while (open && buffer.byteLength >= HEADER_SIZE) {
        const header = decodeHeader(buffer);
        if (buffer.byteLength < HEADER_SIZE + header.length) break;
        const payload = buffer.subarray(HEADER_SIZE, HEADER_SIZE + header.length);
        verifyChecksum(buffer, header, payload);
        open = answer(socket, header.type, header.sequence, payload);
        buffer = buffer.subarray(HEADER_SIZE + header.length);
      }
    } catch (error) {
      refuse(socket, 0, ErrorKind.BadMessage, (error as Error).message);
      open = false;
    }
    if (!open) {
      socket.end();
      buffer = new Uint8Array(0);
    }
    c.inbound = buffer.slice();
  };

  const handlers = (needsToken: boolean): SocketHandler<Connection> => ({
    open(socket) {
      socket.data = { needsToken, inbound: new Uint8Array(0), helloDone: false, outbound: [], outboundBytes: 0 };
      sockets.add(socket);
      stats.clients++;
    },
    data: receive,
    drain(socket) {
      const c = socket.data;
      while (c.outbound.length > 0) {
        const next = c.outbound[0]!;
        const written = Math.max(socket.write(next), 0);
        c.outboundBytes -= written;
        if (written < next.byteLength) {
          c.outbound[0] = next.subarray(written);
          return;
        }
        c.outbound.shift();
      }
    },
    close(socket) {
      sockets.delete(socket);
    },
    error(socket) {
      sockets.delete(socket);
    },
  });

  rmSync(socketPath, { force: true });
  const listeners: Array<{ stop(closeActive?: boolean): void }> = [];
  let tcp: MemoryServer["tcp"];
  try {
    listeners.push(Bun.listen<Connection>({ unix: socketPath, socket: handlers(false) }));
    if (options.tcpAddress) {
      const listener = Bun.listen<Connection>({ hostname: options.tcpAddress, port: 0, socket: handlers(true) });
      listeners.push(listener);
      tcp = { kind: "tcp", address: options.tcpAddress, port: listener.port, token };
    }
  } catch (error) {
    for (const listener of listeners) listener.stop(true);
    munmap(address, layout.size);
    if (ownsFd) close(fd);
    throw new SnowflockError("MEMORY", `the memory server cannot listen on ${options.tcpAddress && listeners.length === 1 ? `${options.tcpAddress} (TCP)` : socketPath}: ${(error as Error).message}`);
  }

  return {
    socketPath,
    tcp,
    stats: () => ({ ...stats }),
    close() {
      if (closed) return;
      closed = true;
      for (const listener of listeners) listener.stop(true);
      for (const socket of sockets) socket.terminate();
      sockets.clear();
      munmap(address, layout.size);
      if (ownsFd) close(fd);
      rmSync(socketPath, { force: true });
    },
  };
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.byteLength + b.byteLength);
  out.set(a);
  out.set(b, a.byteLength);
  return out;
}
