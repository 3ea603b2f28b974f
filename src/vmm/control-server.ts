/** Serves a VMM's control socket: reads request lines, answers each with one response line. */
import type { ListenerLimits } from "../net/bounded-listener.ts";
import { serveLines } from "../net/line-server.ts";
import { scaledTimeout } from "../timeouts.ts";
import { type ControlRequest, type ControlResponse, parseRequest } from "./protocol.ts";

/**
 * The socket is the VM owner's alone (mode 0600), so a peer is authenticated by connecting; what
 * it may cost still has bounds (net/bounded-listener.ts): a request line of 128 KiB, 30 s of silence
 * between requests (a request being answered, like a fork, does not count), 64 connections.
 */
function controlListenerLimits(): ListenerLimits {
  return {
    maxConnections: 64,
    preAuthBytes: 0,
    authDeadlineMs: scaledTimeout(30_000),
    messageBytes: 128 * 1024, // the largest request: a family message of 64 KiB (sf_send), ~87 KiB in base64
    idleMs: scaledTimeout(30_000),
    maxOutboundBytes: 4 * 1024 * 1024,
  };
}

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
  return serveLines(path, controlListenerLimits(), (line) => answer(line, handle));
}
