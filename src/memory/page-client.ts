/**
 * memtap's connection to a memory server: a blocking Unix socket for a thread of its own (the
 * fault Worker), with every wait bounded by a deadline and cut short by a wake fd. Nothing it
 * returns has skipped validation.
 */
import { SnowflockError } from "../errors.ts";
import { EINTR, POLLIN } from "../sys/constants.ts";
import { SyscallError } from "../sys/errno.ts";
import { close, read } from "../sys/files.ts";
import { pollRetrying, Woken } from "../sys/poll-retrying.ts";
import { connectTcp, connectUnix, send } from "../sys/socket.ts";
import { describePageServer, type UnicastAddress } from "./page-server-address.ts";
import { PAGE_SIZE } from "../guest-memory/layout.ts";
import {
  decodeError,
  decodeHeader,
  decodeHelloReply,
  decodePageData,
  encodeHello,
  encodeMessage,
  encodePageRequest,
  HEADER_SIZE,
  type Header,
  MAX_MESSAGE_SIZE,
  MessageType,
  PROTOCOL_VERSION,
  ProtocolError,
  verifyChecksum,
} from "./page-protocol.ts";

export interface PageClientOptions {
  timeoutMs: number;
  /** A readable fd that means "stop waiting" (an eventfd); -1 for none. */
  wakeFd: number;
  /** Pages the image must have. */
  pageCount: number;
}

/** Requests fetchEach keeps in flight: about 2 MiB of answers, far under what a server queues for a client (16 MiB). */
export const PIPELINE_DEPTH = 8;

export class PageClient {
  private sequence = 0;
  private readonly buffer = new Uint8Array(MAX_MESSAGE_SIZE);
  /** Bytes in this.buffer, from its start: the answer due first, then perhaps the start of the next. */
  private buffered = 0;
  /** The length of the answer at the front of this.buffer, once received. */
  private answerBytes = 0;

  private constructor(
    readonly fd: number,
    private readonly path: string,
    private readonly options: PageClientOptions,
  ) {}

  /** Connects and says Hello; the server must speak our version and serve an image of our size. */
  static connect(server: UnicastAddress, options: PageClientOptions): PageClient {
    const path = describePageServer(server);
    let fd: number;
    try {
      fd = server.kind === "unix" ? connectUnix(server.path) : connectTcp(server.address, server.port);
    } catch (error) {
      throw new SnowflockError(
        "MEMORY",
        `cannot reach the memory server at ${path}: ${(error as Error).message}`,
        "is the parent VM's memory server running?",
      );
    }
    const client = new PageClient(fd, path, options);
    try {
      const hello = encodeHello(PROTOCOL_VERSION, server.kind === "tcp" ? server.token : undefined);
      const info = decodeHelloReply(client.call(MessageType.Hello, hello, MessageType.HelloReply));
      if (info.version !== PROTOCOL_VERSION || info.pageSize !== PAGE_SIZE || info.pageCount !== options.pageCount) {
        throw client.failure(
          `serves version ${info.version}, ${info.pageCount} pages of ${info.pageSize} bytes; this clone needs ` +
            `version ${PROTOCOL_VERSION}, ${options.pageCount} pages of ${PAGE_SIZE}`,
        );
      }
      return client;
    } catch (error) {
      client.close();
      throw error;
    }
  }

  /** Contents of `pages` (at most MAX_PAGES_PER_REQUEST), as views valid until the next call. */
  fetch(pages: number[]): Uint8Array[] {
    return decodePageData(this.call(MessageType.PageRequest, encodePageRequest(pages), MessageType.PageData, pages), pages);
  }

  /**
   * Several requests with up to PIPELINE_DEPTH of them in flight, taken from `requests` as there is
   * room: each answer goes to `each`, in order, as views valid during that call. One request at a
   * time left the link idle for a round trip per 256 KiB (an eager clone on another Xen host fetched
   * at 1-3 MiB/s).
   */
  fetchEach(requests: Iterable<number[]>, each: (pages: number[], contents: Uint8Array[]) => void): void {
    const next = requests[Symbol.iterator]();
    const inFlight: Array<{ pages: number[]; sequence: number }> = [];
    let more = true;
    const send = () => {
      while (more && inFlight.length < PIPELINE_DEPTH) {
        const request = next.next();
        if (request.done) more = false;
        else inFlight.push({ pages: request.value, sequence: this.send(MessageType.PageRequest, encodePageRequest(request.value)) });
      }
    };
    send();
    while (inFlight.length > 0) {
      const { pages, sequence } = inFlight.shift()!;
      const body = this.receive(sequence, MessageType.PageData, pages);
      send(); // the server answers the next while this answer is put in place
      each(pages, decodePageData(body, pages));
      this.consume(inFlight.length === 0);
    }
  }

  /**
   * The server never speaks unasked: if the socket turns readable while idle, it closed the
   * connection (or is misbehaving). Always throws.
   */
  idleReadable(): never {
    const n = this.readSome(this.buffer.subarray(0, 1));
    throw n === 0 ? this.failure("closed the connection") : this.failure("sent a message nobody asked for");
  }

  /** The socket turned readable between requests; see idleReadable. */
  idle(): void {
    this.idleReadable();
  }

  close(): void {
    try {
      close(this.fd);
    } catch {}
  }

  private failure(what: string, cause?: unknown): SnowflockError {
    return new SnowflockError("MEMORY", `the memory server at ${this.path} ${what}`, undefined, { cause });
  }

  /** A server that went away shows as EOF, EPIPE or ECONNRESET depending on timing: one message for all. */
  private connectionFailure(error: unknown): SnowflockError {
    if (error instanceof SyscallError && (error.errnoName === "EPIPE" || error.errnoName === "ECONNRESET"))
      return this.failure(`closed the connection (${error.errnoName})`, error);
    return this.failure(`connection failed (${(error as Error).message})`, error);
  }

  /** One request, one answer: returns the answer's payload (a view of this.buffer). */
  private call(type: MessageType, payload: Uint8Array, answer: MessageType, pages?: number[]): Uint8Array {
    const body = this.receive(this.send(type, payload), answer, pages, type);
    this.consume(true);
    return body;
  }

  /** Sends one request; its sequence number. */
  private send(type: MessageType, payload: Uint8Array): number {
    const sequence = (this.sequence = (this.sequence + 1) >>> 0);
    this.writeAll(encodeMessage(type, sequence, payload));
    return sequence;
  }

  /**
   * Waits for the answer to request `sequence`, the next one due, at the front of this.buffer
   * (what follows it may be the start of the next answer); returns its payload, checked.
   */
  private receive(sequence: number, answer: MessageType, pages?: number[], type = MessageType.PageRequest): Uint8Array {
    const deadline = performance.now() + this.options.timeoutMs;
    // Read whatever has arrived (usually the whole answer at once) until one message is complete.
    let header: Header | undefined;
    for (;;) {
      if (header === undefined && this.buffered >= HEADER_SIZE) header = this.checked(() => decodeHeader(this.buffer));
      if (header !== undefined && this.buffered >= HEADER_SIZE + header.length) break;
      this.buffered += this.readMore(this.buffered, deadline);
    }
    this.answerBytes = HEADER_SIZE + header.length;
    const body = this.buffer.subarray(HEADER_SIZE, this.answerBytes);
    this.checked(() => verifyChecksum(this.buffer, header, body));
    if (header.sequence !== sequence) throw this.failure(`sent a bad message: answer #${header.sequence} to request #${sequence}`);
    if (header.type === MessageType.Error) {
      const { text } = this.checked(() => decodeError(body));
      throw this.failure(`refused ${pages ? `pages ${pages.join(",")}` : MessageType[type]}: ${text}`);
    }
    if (header.type !== answer)
      throw this.failure(`sent a bad message: ${MessageType[header.type]} where ${MessageType[answer]} was expected`);
    return body;
  }

  /** Drops the answer at the front of this.buffer; after the `last` one asked for, nothing may follow it. */
  private consume(last: boolean): void {
    if (last && this.buffered > this.answerBytes) throw this.failure("sent more than one answer to one request");
    this.buffer.copyWithin(0, this.answerBytes, this.buffered);
    this.buffered -= this.answerBytes;
    this.answerBytes = 0;
  }

  /** Runs a decoder; a ProtocolError becomes a failure that names this server. */
  private checked<T>(decode: () => T): T {
    try {
      return decode();
    } catch (error) {
      if (error instanceof ProtocolError) throw this.failure(`sent a bad message: ${error.detail}`, error);
      throw error;
    }
  }

  private writeAll(message: Uint8Array): void {
    for (let at = 0; at < message.byteLength; ) {
      try {
        at += send(this.fd, message.subarray(at));
      } catch (error) {
        if (error instanceof SyscallError && error.errno === EINTR) continue;
        throw this.connectionFailure(error);
      }
    }
  }

  /** Waits (bounded by the deadline, cut short by the wake fd) and reads into this.buffer at `at`. */
  private readMore(at: number, deadline: number): number {
    for (;;) {
      const left = Math.ceil(deadline - performance.now());
      if (left <= 0) throw this.failure(`did not answer within ${this.options.timeoutMs} ms`);
      const watch = [{ fd: this.fd, events: POLLIN }];
      if (this.options.wakeFd >= 0) watch.push({ fd: this.options.wakeFd, events: POLLIN });
      const [socket = 0, wake = 0] = pollRetrying(watch, left);
      if (wake !== 0) throw new Woken("stop requested");
      if (socket === 0) continue;
      const n = this.readSome(this.buffer.subarray(at));
      if (n === 0) throw this.failure(at === 0 ? "closed the connection" : "closed the connection in the middle of a message");
      return n;
    }
  }

  /** read(2) that turns socket errors into memory-server failures; -1 never escapes. */
  private readSome(into: Uint8Array): number {
    for (;;) {
      try {
        return read(this.fd, into);
      } catch (error) {
        if (error instanceof SyscallError && error.errno === EINTR) continue;
        throw this.connectionFailure(error);
      }
    }
  }
}
