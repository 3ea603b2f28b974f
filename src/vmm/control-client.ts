/** Sends one request to a VMM's control socket and waits (bounded) for its answer. */
import { existsSync } from "node:fs";
import { SnowflockError } from "../errors.ts";
import { CONTROL_PROTOCOL_VERSION, type ControlRequest, type ControlResponse } from "./protocol.ts";
import { vmPaths } from "./run-dir.ts";
import { scaledTimeout } from "../timeouts.ts";

const TIMEOUT_MS = scaledTimeout(5000);

export type RequestBody = ControlRequest extends infer R ? (R extends ControlRequest ? Omit<R, "v"> : never) : never;

export async function controlRequest(name: string, body: RequestBody | ControlRequest["op"], timeoutMs = TIMEOUT_MS): Promise<ControlResponse> {
  const { socket: path } = vmPaths(name);
  if (!existsSync(path)) throw new SnowflockError("NOT_FOUND", `no running VM named '${name}'`, "`snowflock ls` lists the running VMs");
  const request = { v: CONTROL_PROTOCOL_VERSION, ...(typeof body === "string" ? { op: body } : body) };
  return new Promise<ControlResponse>((resolve, reject) => {
    let buffer = "";
    const fail = (why: string) => reject(new SnowflockError("CONTROL", `VM '${name}' did not answer: ${why}`, "it may have just stopped; `snowflock ls` shows what runs"));
    const timer = setTimeout(() => fail(`no answer within ${timeoutMs} ms`), timeoutMs);
    Bun.connect({
      unix: path,
      socket: {
        open(socket) {
          socket.write(`${JSON.stringify(request)}\n`);
        },
        data(socket, chunk) {
          buffer += chunk.toString();
          const newline = buffer.indexOf("\n");
          if (newline < 0) return;
          clearTimeout(timer);
          socket.end();
          try {
            resolve(JSON.parse(buffer.slice(0, newline)) as ControlResponse);
          } catch {
            fail("the answer was not JSON");
          }
        },
        close() {
          clearTimeout(timer);
          if (!buffer.includes("\n")) fail("the connection closed");
        },
        connectError(_socket, error) {
          clearTimeout(timer);
          fail(error.message);
        },
      },
    }).catch((error: Error) => {
      clearTimeout(timer);
      fail(error.message);
    });
  });
}
