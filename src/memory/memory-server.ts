/**
 * The parent side of memory-on-demand: serves pages of a frozen memory image to any number of
 * clones over a Unix socket, and over TCP (token required) for clones on other hosts. It is an async socket server, so it can live in the parent VMM's
 * event loop; pages are read from a read-only shared mapping of the image, so serving one costs a
 * memcpy and no syscall.
 */
import { rmSync } from "node:fs";
import { randomBytes, timingSafeEqual } from "node:crypto";
import { SnowflockError } from "../errors.ts";
import { O_RDONLY } from "../sys/constants.ts";
import { close, open } from "../sys/files.ts";
import { munmap, view } from "../sys/memory.ts";
import { mapImage } from "./image-source.ts";
import { type MemoryLayout, PAGE_SIZE } from "../guest-memory/layout.ts";
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
  MAX_CLIENT_MESSAGE_SIZE,
  MAX_HELLO_SIZE,
  MessageType,
  PROTOCOL_VERSION,
  ProtocolError,
  TOKEN_BYTES,
  verifyChecksum,
} from "./page-protocol.ts";
import type { PageServerAddress } from "./page-server-address.ts";
import type { BoundedListener, Connection, ListenerLimits, ListenerProtocol } from "../net/bounded-listener.ts";
import { listenBounded } from "../net/bounded-listener.ts";
import { scaledTimeout } from "../timeouts.ts";

export interface MemoryServerOptions {
  /** The frozen image, e.g. /proc/PID/fd/N of the parent's memfd; or give imageFd. */
  imagePath?: string;
  /** An open fd of the image; the server does not close it. */
  imageFd?: number;
  layout: MemoryLayout;
  /**
   * Where it listens: a Unix socket (no token: the socket's mode guards it), TCP at an address (an
   * ephemeral port) for clones on other hosts, which must present the token; one or both.
   */
  socketPath?: string;
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
  socketPath?: string;
  /** Where clones on other hosts reach it (with its token), when it listens on TCP. */
  tcp?: PageServerAddress & { kind: "tcp" };
  stats(): MemoryServerStats;
  close(): void;
}

/** Per-connection state; a connection is authenticated once its Hello is accepted. */
interface Client {
  /** Over TCP the Hello must carry the server's token. */
  needsToken: boolean;
}

/**
 * What a client may cost the parent (net/bounded-listener.ts): before its Hello, one Hello's bytes
 * and 10 s; after it, one PageRequest at a time, for as long as it likes (memtap holds its connection
 * for the clone's life). A client that asks faster than it reads is cut off at 16 MiB of unread
 * answers. One connection per clone: 1024 is more than a family has.
 */
function memoryServerLimits(): ListenerLimits {
  return {
    maxConnections: 1024,
    preAuthBytes: MAX_HELLO_SIZE,
    authDeadlineMs: scaledTimeout(10_000),
    messageBytes: MAX_CLIENT_MESSAGE_SIZE,
    idleMs: undefined,
    maxOutboundBytes: 16 * 1024 * 1024,
  };
}

export async function startMemoryServer(options: MemoryServerOptions): Promise<MemoryServer> {
  const { layout, socketPath } = options;
  if (options.imageFd === undefined && options.imagePath === undefined)
    throw new SnowflockError("MEMORY", "the memory server needs an image path or fd");
  if (socketPath === undefined && options.tcpAddress === undefined)
    throw new SnowflockError("INTERNAL", "the memory server was given nowhere to listen (a socket path or a TCP address)");
  const fd = options.imageFd ?? open(options.imagePath!, O_RDONLY);
  const ownsFd = options.imageFd === undefined;
  const imageName = options.imagePath ?? `fd ${fd}`;
  let address = 0;
  try {
    address = mapImage(fd, layout.size, `memory image ${imageName}`);
  } catch (error) {
    if (ownsFd) close(fd);
    throw error;
  }
  const image = view(address, layout.size);
  const pageCount = layout.size / PAGE_SIZE;
  const stats: MemoryServerStats = { pagesServed: 0, bytesSent: 0, messagesSent: 0, requests: 0, clients: 0, errors: 0 };
  let closed = false;
  const token = new Uint8Array(randomBytes(TOKEN_BYTES));

  const send = (connection: Connection<Client>, message: Uint8Array) => {
    stats.bytesSent += message.byteLength;
    stats.messagesSent++;
    connection.write(message);
  };

  const errorMessage = (sequence: number, kind: ErrorKind, text: string) => {
    stats.errors++;
    return encodeMessage(MessageType.Error, sequence, encodeError(kind, text));
  };

  const refuse = (connection: Connection<Client>, sequence: number, kind: ErrorKind, text: string) =>
    send(connection, errorMessage(sequence, kind, text));

  /** Answers one message; false when the connection is done. */
  const answer = (connection: Connection<Client>, type: MessageType, sequence: number, payload: Uint8Array): boolean => {
    if (!connection.authenticated) {
      if (type !== MessageType.Hello) throw new ProtocolError(`${MessageType[type]} before Hello`);
      const { version, token: given } = decodeHello(payload);
      if (version !== PROTOCOL_VERSION) {
        refuse(
          connection,
          sequence,
          ErrorKind.UnsupportedVersion,
          `protocol version ${version} is not supported; this server speaks ${PROTOCOL_VERSION}`,
        );
        return false;
      }
      if (connection.state.needsToken && !(given && timingSafeEqual(given, token))) {
        refuse(connection, sequence, ErrorKind.BadMessage, "this memory server needs its token, and the Hello carried none or another");
        return false;
      }
      connection.authenticate();
      send(
        connection,
        encodeMessage(MessageType.HelloReply, sequence, encodeHelloReply({ version: PROTOCOL_VERSION, pageSize: PAGE_SIZE, pageCount })),
      );
      return true;
    }
    if (type !== MessageType.PageRequest) throw new ProtocolError(`unexpected ${MessageType[type]}`);
    stats.requests++;
    const pages = decodePageRequest(payload);
    const outside = pages.find((p) => p >= pageCount);
    if (outside !== undefined) {
      refuse(connection, sequence, ErrorKind.OutOfRange, `page ${outside} is outside the image (${pageCount} pages)`);
      return true;
    }
    const data = encodePageData(pages, (p) => image.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE));
    stats.pagesServed += pages.length;
    send(connection, encodeMessage(MessageType.PageData, sequence, data));
    return true;
  };

  const protocol = (needsToken: boolean): ListenerProtocol<Client> => ({
    open() {
      stats.clients++;
      return { needsToken };
    },
    // The header alone tells a message's length (and refuses one too long for its type).
    messageLength: (_connection, pending) =>
      pending.byteLength < HEADER_SIZE ? undefined : HEADER_SIZE + decodeHeader(pending.peek(HEADER_SIZE)).length,
    message(connection, bytes) {
      if (closed) return;
      try {
        const header = decodeHeader(bytes);
        const payload = bytes.subarray(HEADER_SIZE);
        verifyChecksum(bytes, header, payload);
        if (answer(connection, header.type, header.sequence, payload)) return;
      } catch (error) {
        refuse(connection, 0, ErrorKind.BadMessage, (error as Error).message);
      }
      connection.close();
    },
    refusal(reason) {
      const message = errorMessage(0, ErrorKind.BadMessage, reason);
      stats.bytesSent += message.byteLength;
      stats.messagesSent++;
      return message;
    },
  });

  const listeners: BoundedListener[] = [];
  let tcp: MemoryServer["tcp"];
  let where = "";
  try {
    if (socketPath !== undefined) {
      where = socketPath;
      rmSync(socketPath, { force: true });
      listeners.push(listenBounded({ unix: socketPath }, memoryServerLimits(), protocol(false)));
    }
    if (options.tcpAddress !== undefined) {
      where = `${options.tcpAddress} (TCP)`;
      const listener = listenBounded({ hostname: options.tcpAddress, port: 0 }, memoryServerLimits(), protocol(true));
      listeners.push(listener);
      tcp = { kind: "tcp", address: options.tcpAddress, port: listener.port, token };
    }
  } catch (error) {
    for (const listener of listeners) listener.stop();
    munmap(address, layout.size);
    if (ownsFd) close(fd);
    throw new SnowflockError("MEMORY", `the memory server cannot listen on ${where}: ${(error as Error).message}`);
  }

  return {
    socketPath,
    tcp,
    stats: () => ({ ...stats }),
    close() {
      if (closed) return;
      closed = true;
      for (const listener of listeners) listener.stop();
      munmap(address, layout.size);
      if (ownsFd) close(fd);
      if (socketPath !== undefined) rmSync(socketPath, { force: true });
    },
  };
}
