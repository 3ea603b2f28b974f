/** Serves a VMM's control socket: reads request lines, answers each with one response line. */
import { chmodSync } from "node:fs";
import { type ControlRequest, type ControlResponse, parseRequest } from "./protocol.ts";

const MAX_REQUEST_BYTES = 64 * 1024;

export type ControlHandler = (request: ControlRequest) => ControlResponse | Promise<ControlResponse>;

async function answer(line: string, handle: ControlHandler): Promise<ControlResponse> {
  const request = parseRequest(line);
  if ("error" in request) return { ok: false, error: request.error };
  try {
    return await handle(request);
  } catch (error) {
    return { ok: false, error: (error as Error).message };
  }
}

export function serveControl(path: string, handle: ControlHandler): { close(): void } {
  const buffers = new WeakMap<object, string>();
  const server = Bun.listen({
    unix: path,
    socket: {
      open(socket) {
        buffers.set(socket, "");
      },
      async data(socket, chunk) {
        let buffer = (buffers.get(socket) ?? "") + chunk.toString();
        if (buffer.length > MAX_REQUEST_BYTES) {
          socket.end(`${JSON.stringify({ ok: false, error: "request too large" })}\n`);
          return;
        }
        let newline: number;
        while ((newline = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, newline);
          buffer = buffer.slice(newline + 1);
          socket.write(`${JSON.stringify(await answer(line, handle))}\n`);
        }
        buffers.set(socket, buffer);
      },
    },
  });
  chmodSync(path, 0o600);
  return { close: () => server.stop(true) };
}
