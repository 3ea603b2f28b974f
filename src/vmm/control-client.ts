/** Sends one request to a VMM's control socket and waits (bounded) for its answer. */
import { existsSync } from "node:fs";
import { SnowflockError } from "../errors.ts";
import { requestLine } from "../net/line-request.ts";
import { CONTROL_PROTOCOL_VERSION, type ControlRequest, type ControlResponse } from "./protocol.ts";
import { vmPaths } from "../run-dir.ts";
import { scaledTimeout } from "../timeouts.ts";

const TIMEOUT_MS = scaledTimeout(5000);
/** A VMM's answer is one line of JSON; the largest, a fork's or a status, is far below this. */
const MAX_ANSWER_BYTES = 16 * 1024 * 1024;

export type RequestBody = ControlRequest extends infer R ? (R extends ControlRequest ? Omit<R, "v"> : never) : never;

export async function controlRequest(
  name: string,
  body: RequestBody | ControlRequest["op"],
  timeoutMs = TIMEOUT_MS,
): Promise<ControlResponse> {
  const { socket: path } = vmPaths(name);
  if (!existsSync(path)) throw new SnowflockError("NOT_FOUND", `no running VM named '${name}'`, "`snowflock ls` lists the running VMs");
  const request = { v: CONTROL_PROTOCOL_VERSION, ...(typeof body === "string" ? { op: body } : body) };
  const failure = (why: string) =>
    new SnowflockError("CONTROL", `VM '${name}' did not answer: ${why}`, "it may have just stopped; `snowflock ls` shows what runs");
  const line = await requestLine({ unix: path }, `${JSON.stringify(request)}\n`, { timeoutMs, maxAnswerBytes: MAX_ANSWER_BYTES, failure });
  try {
    return JSON.parse(line) as ControlResponse;
  } catch {
    throw failure("the answer was not JSON");
  }
}
