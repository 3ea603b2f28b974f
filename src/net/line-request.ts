/**
 * One request out, one line back, over a Unix or TCP socket: the client side of snowflock's
 * JSON-lines control planes (a VMM's control socket, a host's agent). The answer is bounded in
 * time and in bytes; a request larger than the socket takes at once goes as the socket drains.
 */
export type LineTarget = { unix: string } | { hostname: string; port: number };

export interface LineRequestOptions {
  timeoutMs: number;
  /** An answer longer than this without a newline is a failure. */
  maxAnswerBytes: number;
  /** The error for a failure, given why (no answer in time, the connection closed, ...). */
  failure: (why: string) => Error;
  /** Gives up at once when aborted (the connection is closed); the abort's reason is the error. */
  signal?: AbortSignal;
}

/** Sends `request` (ending in a newline) and resolves to the first line of the answer (without it). */
export function requestLine(target: LineTarget, request: Uint8Array | string, options: LineRequestOptions): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let received = 0;
    let answered = false;
    let unsent = Buffer.from(request);
    const send = (socket: { write(bytes: Uint8Array): number }) => void (unsent = unsent.subarray(Math.max(0, socket.write(unsent))));
    let open: { end(): void } | undefined;
    /** Whatever the outcome: no timer or abort listener outlives the request. */
    const finish = () => {
      answered = true;
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", aborted);
    };
    const fail = (why: string | Error) => {
      finish();
      open?.end();
      reject(typeof why === "string" ? options.failure(why) : why);
    };
    const timer = setTimeout(() => fail(`no answer within ${options.timeoutMs} ms`), options.timeoutMs);
    const aborted = () => fail(options.signal?.reason instanceof Error ? options.signal.reason : "the request was given up");
    if (options.signal?.aborted) return aborted();
    options.signal?.addEventListener("abort", aborted, { once: true });
    const socket = {
      open: send,
      drain: send,
      data(socket: { end(): void }, chunk: Buffer) {
        if (answered) return;
        const newline = chunk.indexOf(0x0a);
        chunks.push(newline < 0 ? chunk : chunk.subarray(0, newline));
        received += chunk.byteLength;
        if (newline < 0 && received <= options.maxAnswerBytes) return;
        if (newline < 0) return fail(`its answer ran past ${options.maxAnswerBytes} bytes without ending`);
        finish();
        socket.end();
        resolve(Buffer.concat(chunks).toString("utf8"));
      },
      close() {
        if (!answered) fail("the connection closed");
      },
      connectError(_socket: unknown, error: Error) {
        if (!answered) fail(error.message);
      },
    };
    const connected =
      "unix" in target ? Bun.connect({ unix: target.unix, socket }) : Bun.connect({ hostname: target.hostname, port: target.port, socket });
    connected.then(
      (s) => {
        if (answered) s.end();
        else open = s;
      },
      (error: Error) => {
        if (!answered) fail(error.message);
      },
    );
  });
}
