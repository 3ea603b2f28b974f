/**
 * Serves a Unix socket of JSON lines: each request line gets one answer line. The socket is its
 * owner's alone (mode 0600), so a peer is authenticated by connecting; what it may cost still has
 * bounds (bounded-listener.ts). The server side of line-request.ts.
 */
import { chmodSync } from "node:fs";
import { type ListenerLimits, listenBounded } from "./bounded-listener.ts";
import { lineLength } from "./byte-queue.ts";

/** `answer` turns a request line into the answer object; what it throws goes back as `{ ok: false, error }`. */
export function serveLines(path: string, limits: ListenerLimits, answer: (line: string) => unknown): { close(): void } {
  const reply = async (line: string): Promise<unknown> => {
    try {
      return await answer(line);
    } catch (error) {
      return { ok: false, error: (error as Error).message };
    }
  };
  const server = listenBounded({ unix: path }, limits, {
    open(connection) {
      connection.authenticate();
      return undefined;
    },
    messageLength: (_connection, pending) => lineLength(pending),
    message: async (connection, bytes) => connection.write(`${JSON.stringify(await reply(bytes.toString().trimEnd()))}\n`),
    refusal: (reason) => `${JSON.stringify({ ok: false, error: reason })}\n`,
  });
  chmodSync(path, 0o600);
  return { close: () => server.stop() };
}
