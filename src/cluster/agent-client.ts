/** Sends one authenticated request to a host's agent and checks the signed answer. */
import { SnowflockError } from "../errors.ts";
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

export async function agentRequest(target: AgentAddress, secret: string, op: AgentOp, body: unknown = null, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<unknown> {
  const request = signRequest(secret, target.host, op, body);
  const line = await new Promise<string>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let received = 0;
    let answered = false;
    // A clone order may have megabytes: what the socket does not take now goes when it drains.
    let unsent = Buffer.from(encodeRequest(request));
    const send = (socket: { write(bytes: Uint8Array): number }) => void (unsent = unsent.subarray(Math.max(0, socket.write(unsent))));
    const fail = (why: string) => reject(new SnowflockError("CONTROL", `agent on ${target.host} (${target.address}:${target.port}) did not answer: ${why}`, "is the cluster up? `snowflock cluster status` shows the agents"));
    const timer = setTimeout(() => fail(`no answer within ${timeoutMs} ms`), timeoutMs);
    Bun.connect({
      hostname: target.address,
      port: target.port,
      socket: {
        open: send,
        drain: send,
        data(socket, chunk) {
          if (answered) return;
          const newline = chunk.indexOf(0x0a);
          chunks.push(newline < 0 ? chunk : chunk.subarray(0, newline));
          received += chunk.byteLength;
          if (newline < 0 && received <= MAX_ANSWER_BYTES) return;
          answered = true;
          clearTimeout(timer);
          socket.end();
          if (newline < 0) fail(`its answer ran past ${MAX_ANSWER_BYTES} bytes without ending`);
          else resolve(Buffer.concat(chunks).toString("utf8"));
        },
        close() {
          clearTimeout(timer);
          if (!answered) fail("the connection closed");
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
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    throw new SnowflockError("CONTROL", `agent on ${target.host} answered with something that is not JSON: ${JSON.stringify(line.slice(0, 80))}`);
  }
  const checked = verifyAnswer(secret, request.header.nonce, value);
  if ("problem" in checked) throw new SnowflockError("CONTROL", `agent on ${target.host} refused: ${checked.problem}`);
  if (!checked.verified.ok) throw new SnowflockError("CONTROL", `agent on ${target.host} refused: ${checked.verified.error ?? "no reason given"}`);
  return checked.verified.body;
}
