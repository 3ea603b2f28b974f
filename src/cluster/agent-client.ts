/** Sends one authenticated request to a host's agent and checks the signed answer. */
import { SnowflockError } from "../errors.ts";
import { requestLine } from "../net/line-request.ts";
import { type AgentOp, encodeRequest, MAX_BODY_BYTES, signRequest, verifyAnswer } from "./agent-protocol.ts";
import { scaledTimeout } from "../timeouts.ts";

const DEFAULT_TIMEOUT_MS = scaledTimeout(5000);
/** An answer is one line of JSON, signed; no agent's answer comes near a request body's limit. */
const MAX_ANSWER_BYTES = MAX_BODY_BYTES;

export interface AgentAddress {
  host: string;
  address: string;
  port: number;
}

export async function agentRequest(
  target: AgentAddress,
  secret: string,
  op: AgentOp,
  body: unknown = null,
  timeoutMs = DEFAULT_TIMEOUT_MS,
  signal?: AbortSignal,
): Promise<unknown> {
  const request = signRequest(secret, target.host, op, body);
  const failure = (why: string) =>
    new SnowflockError(
      "CONTROL",
      `agent on ${target.host} (${target.address}:${target.port}) did not answer: ${why}`,
      "is the cluster up? `snowflock cluster status` shows the agents",
    );
  // A clone order may have megabytes: requestLine sends what the socket does not take now as it drains.
  const line = await requestLine({ hostname: target.address, port: target.port }, encodeRequest(request), {
    timeoutMs,
    maxAnswerBytes: MAX_ANSWER_BYTES,
    failure,
    signal,
  });
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    throw new SnowflockError(
      "CONTROL",
      `agent on ${target.host} answered with something that is not JSON: ${JSON.stringify(line.slice(0, 80))}`,
    );
  }
  const checked = verifyAnswer(secret, request.header.nonce, value);
  if ("problem" in checked) throw new SnowflockError("CONTROL", `agent on ${target.host} refused: ${checked.problem}`);
  if (!checked.verified.ok)
    throw new SnowflockError("CONTROL", `agent on ${target.host} refused: ${checked.verified.error ?? "no reason given"}`);
  return checked.verified.body;
}
