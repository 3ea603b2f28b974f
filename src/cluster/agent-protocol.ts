/**
 * The agent's control plane: one JSON object per line over TCP, every request and every answer
 * authenticated with HMAC-SHA256 under the cluster's secret. A request carries a timestamp and a
 * nonce, so a captured request cannot be replayed; an answer is bound to the request's nonce, so
 * it cannot be forged or swapped either.
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";

export const AGENT_PROTOCOL_VERSION = 1;
/** How far a request's clock may be from the agent's. */
export const MAX_CLOCK_SKEW_MS = 60_000;
/** A clone order carries a descriptor (base64): a 1 GiB guest's is a few hundred KiB. */
export const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

/**
 * hello: who the agent is and what room it has; clone: start clones of a parent on another host
 * (clone-order.ts); relay: pass a control request to a VM on the agent's host.
 */
export type AgentOp = "hello" | "clone" | "relay";

export interface AgentRequest {
  v: number;
  op: AgentOp;
  /** The host the request is meant for; an agent refuses requests for another host. */
  host: string;
  ts: number;
  nonce: string;
  body: unknown;
  mac: string;
}

export interface AgentAnswer {
  ok: boolean;
  /** The request's nonce. */
  nonce: string;
  body?: unknown;
  error?: string;
  mac: string;
}

function key(secret: string): Buffer {
  return Buffer.from(secret, "hex");
}

function mac(secret: string, text: string): string {
  return createHmac("sha256", key(secret)).update(text).digest("hex");
}

const requestText = (r: Omit<AgentRequest, "mac">) => [r.v, r.op, r.host, r.ts, r.nonce, JSON.stringify(r.body ?? null)].join("\n");
const answerText = (a: Omit<AgentAnswer, "mac">) => [a.ok, a.nonce, JSON.stringify(a.body ?? null), a.error ?? ""].join("\n");

function sameMac(expected: string, given: unknown): boolean {
  if (typeof given !== "string" || !/^[0-9a-f]{64}$/.test(given)) return false;
  return timingSafeEqual(Buffer.from(expected, "hex"), Buffer.from(given, "hex"));
}

export function signRequest(secret: string, host: string, op: AgentOp, body: unknown, now = Date.now()): AgentRequest {
  const unsigned = { v: AGENT_PROTOCOL_VERSION, op, host, ts: now, nonce: randomBytes(16).toString("hex"), body };
  return { ...unsigned, mac: mac(secret, requestText(unsigned)) };
}

export function signAnswer(secret: string, answer: Omit<AgentAnswer, "mac">): AgentAnswer {
  return { ...answer, mac: mac(secret, answerText(answer)) };
}

/** Checks an answer against the secret and the nonce of the request it answers. */
export function verifyAnswer(secret: string, nonce: string, value: unknown): { verified: AgentAnswer } | { problem: string } {
  if (typeof value !== "object" || value === null) return { problem: "the answer is not an object" };
  const a = value as AgentAnswer;
  // A refusal of an unauthenticated request is unsigned by design; pass its reason on.
  if (a.ok === false && a.mac === undefined && typeof a.error === "string") return { problem: a.error };
  if (a.nonce !== nonce) return { problem: "the answer is for another request" };
  if (!sameMac(mac(secret, answerText(a)), a.mac)) return { problem: "the answer is not signed with this cluster's secret" };
  return { verified: a };
}

/** Remembers recent nonces so a request is accepted once at most. */
export class ReplayGuard {
  private seen = new Map<string, number>();

  /** Why the request must be refused, or undefined if it is authentic and fresh. */
  check(secret: string, hostName: string, value: unknown, now = Date.now()): string | undefined {
    if (typeof value !== "object" || value === null) return "the request is not an object";
    const r = value as AgentRequest;
    if (r.v !== AGENT_PROTOCOL_VERSION) return `unsupported protocol version ${String(r.v)}`;
    if (typeof r.op !== "string" || typeof r.host !== "string" || typeof r.ts !== "number" || typeof r.nonce !== "string" || !/^[0-9a-f]{32}$/.test(r.nonce)) {
      return "the request lacks op, host, ts or nonce";
    }
    if (!sameMac(mac(secret, requestText(r)), r.mac)) return "the request is not signed with this cluster's secret";
    if (r.host !== hostName) return `the request is for host ${r.host}, this is ${hostName}`;
    if (Math.abs(now - r.ts) > MAX_CLOCK_SKEW_MS) return "the request is too old (or the clocks differ by over a minute)";
    for (const [nonce, at] of this.seen) if (now - at > 2 * MAX_CLOCK_SKEW_MS) this.seen.delete(nonce);
    if (this.seen.has(r.nonce)) return "the request was already used (replay)";
    this.seen.set(r.nonce, now);
    return undefined;
  }
}
