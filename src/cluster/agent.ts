/**
 * `snowflock agent`: one per host. It accepts authenticated requests from the cluster's members
 * and, later, starts clone VMs on this host. Anything unauthenticated is refused and the
 * connection closed.
 */
import { getpid } from "../sys/process.ts";
import { type AgentAnswer, type AgentRequest, MAX_MESSAGE_BYTES, ReplayGuard, signAnswer } from "./agent-protocol.ts";
import packageJson from "../../package.json" with { type: "json" };

export interface AgentOptions {
  host: string;
  secret: string;
  address: string;
  port: number;
}

export interface AgentStats {
  requests: number;
  refused: number;
}

export interface Agent {
  port: number;
  stats(): AgentStats;
  stop(): void;
}

export function startAgent(options: AgentOptions): Agent {
  const guard = new ReplayGuard();
  const stats: AgentStats = { requests: 0, refused: 0 };
  const buffers = new WeakMap<object, string>();

  const serve = (request: AgentRequest): Omit<AgentAnswer, "mac"> => {
    switch (request.op) {
      case "hello":
        return { ok: true, nonce: request.nonce, body: { host: options.host, pid: getpid(), version: packageJson.version } };
      default:
        return { ok: false, nonce: request.nonce, error: `unknown operation ${JSON.stringify(request.op)}` };
    }
  };

  const server = Bun.listen({
    hostname: options.address,
    port: options.port,
    socket: {
      open(socket) {
        buffers.set(socket, "");
      },
      data(socket, chunk) {
        let buffer = (buffers.get(socket) ?? "") + chunk.toString();
        if (buffer.length > MAX_MESSAGE_BYTES) {
          stats.refused++;
          socket.end(`${JSON.stringify({ ok: false, error: "request too large" })}\n`);
          return;
        }
        let newline: number;
        while ((newline = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, newline);
          buffer = buffer.slice(newline + 1);
          let value: unknown;
          try {
            value = JSON.parse(line);
          } catch {
            value = undefined;
          }
          const refusal = guard.check(options.secret, options.host, value);
          if (refusal) {
            // Nothing is signed for an unauthenticated peer: it learns only that it was refused.
            stats.refused++;
            socket.end(`${JSON.stringify({ ok: false, error: `unauthenticated: ${refusal}` })}\n`);
            return;
          }
          stats.requests++;
          socket.write(`${JSON.stringify(signAnswer(options.secret, serve(value as AgentRequest)))}\n`);
        }
        buffers.set(socket, buffer);
      },
    },
  });
  return { port: server.port, stats: () => ({ ...stats }), stop: () => server.stop(true) };
}
