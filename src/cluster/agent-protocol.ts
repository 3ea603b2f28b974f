/**
 * The agent's control plane over TCP, every request and every answer authenticated with
 * HMAC-SHA256 under the cluster's secret. A request is a signed header line (JSON, at most
 * MAX_HEADER_BYTES) followed by its body: `bodyBytes` bytes of JSON whose SHA-256 the header
 * carries. So the agent authenticates a peer from its first few hundred bytes, before it buffers
 * any body (a clone order's descriptor may have megabytes), and an unauthenticated peer can make it
 * hold no more than one header line. The header carries a timestamp and a nonce, so a captured
 * request cannot be replayed (seen-nonces.ts keeps that true across restarts); an answer (one JSON
 * line) is bound to the request's nonce, so it cannot be forged or swapped either.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { SeenNonces } from "./seen-nonces.ts";

export const AGENT_PROTOCOL_VERSION = 2;
/** How far a request's clock may be from the agent's. */
export const MAX_CLOCK_SKEW_MS = 60_000;
/** A header line: a few hundred bytes, whatever the request. */
export const MAX_HEADER_BYTES = 1024;
/** A clone order carries a descriptor (base64): a 1 GiB guest's is a few hundred KiB. */
export const MAX_BODY_BYTES = 16 * 1024 * 1024;

/**
 * hello: who the agent is and what room it has; clone: start clones of a parent on another host
 * (clone-order.ts); relay: pass a control request to a VM on the agent's host; family: news of a
 * family of domUs spread over dom0s (family-event.ts).
 */
export type AgentOp = "hello" | "clone" | "relay" | "family";

/** The first line of a request, authenticated on its own; the body follows it. */
export interface AgentRequestHeader {
  v: number;
  op: AgentOp;
  /** The host the request is meant for; an agent refuses requests for another host. */
  host: string;
  ts: number;
  nonce: string;
  bodyBytes: number;
  /** SHA-256 of the body's bytes, hex. */
  bodySha256: string;
  mac: string;
}

/** A request as the agent serves it, once header and body have both been checked. */
export interface AgentRequest {
  op: AgentOp;
  nonce: string;
  body: unknown;
}

/** A request ready to send: its header and the body's JSON text. */
export interface SignedRequest {
  header: AgentRequestHeader;
  body: string;
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

const requestText = (r: Omit<AgentRequestHeader, "mac">) => [r.v, r.op, r.host, r.ts, r.nonce, r.bodyBytes, r.bodySha256].join("\n");
const sha256 = (bytes: Uint8Array | string) => createHash("sha256").update(bytes).digest("hex");
const answerText = (a: Omit<AgentAnswer, "mac">) => [a.ok, a.nonce, JSON.stringify(a.body ?? null), a.error ?? ""].join("\n");

function sameMac(expected: string, given: unknown): boolean {
  if (typeof given !== "string" || !/^[0-9a-f]{64}$/.test(given)) return false;
  return timingSafeEqual(Buffer.from(expected, "hex"), Buffer.from(given, "hex"));
}

export function signRequest(secret: string, host: string, op: AgentOp, body: unknown, now = Date.now()): SignedRequest {
  const text = JSON.stringify(body ?? null);
  const nonce = randomBytes(16).toString("hex");
  const unsigned = { v: AGENT_PROTOCOL_VERSION, op, host, ts: now, nonce, bodyBytes: Buffer.byteLength(text), bodySha256: sha256(text) };
  return { header: { ...unsigned, mac: mac(secret, requestText(unsigned)) }, body: text };
}

/** The bytes on the wire: header line, then body. */
export function encodeRequest(request: SignedRequest): string {
  return `${JSON.stringify(request.header)}\n${request.body}`;
}

/** Whether a body is the one its (authenticated) header vouches for. */
export function bodyMatches(header: AgentRequestHeader, body: Uint8Array): boolean {
  return body.byteLength === header.bodyBytes && sha256(body) === header.bodySha256;
}

export function signAnswer(secret: string, answer: Omit<AgentAnswer, "mac">): AgentAnswer {
  return { ...answer, mac: mac(secret, answerText(answer)) };
}

const MAX_ANSWER_DEPTH = 64;

/** Whether `value` nests at most `max` arrays or objects deep, walked without recursion. */
function nestsWithin(value: unknown, max: number): boolean {
  const stack: Array<[unknown, number]> = [[value, 0]];
  while (stack.length > 0) {
    const [item, depth] = stack.pop()!;
    if (typeof item !== "object" || item === null) continue;
    if (depth >= max) return false;
    for (const child of Object.values(item)) stack.push([child, depth + 1]);
  }
  return true;
}

/** Checks an answer against the secret and the nonce of the request it answers. */
export function verifyAnswer(secret: string, nonce: string, value: unknown): { verified: AgentAnswer } | { problem: string } {
  if (typeof value !== "object" || value === null) return { problem: "the answer is not an object" };
  const a = value as AgentAnswer;
  // A refusal of an unauthenticated request is unsigned by design; pass its reason on.
  if (a.ok === false && a.mac === undefined && typeof a.error === "string") return { problem: a.error };
  if (a.nonce !== nonce) return { problem: "the answer is for another request" };
  if (typeof a.ok !== "boolean" || (a.error !== undefined && typeof a.error !== "string"))
    return { problem: "the answer lacks ok or error" };
  // An agent's answers nest a few levels; writing out a far deeper one to check its MAC would take seconds.
  if (!nestsWithin(a.body, MAX_ANSWER_DEPTH)) return { problem: "the answer's body nests too deeply" };
  if (!sameMac(mac(secret, answerText(a)), a.mac)) return { problem: "the answer is not signed with this cluster's secret" };
  return { verified: a };
}

/** How long a nonce must be remembered: its request passes the clock check for up to two skew windows. */
export const NONCE_KEEP_MS = 2 * MAX_CLOCK_SKEW_MS;

/** Accepts an authentic header once at most; `seen` remembers nonces (across restarts when it has a file). */
export class ReplayGuard {
  constructor(private readonly seen = new SeenNonces(NONCE_KEEP_MS)) {}

  /** Why the request must be refused, or undefined if its header is authentic and fresh. */
  check(secret: string, hostName: string, value: unknown, now = Date.now()): string | undefined {
    if (typeof value !== "object" || value === null) return "the request is not an object";
    const r = value as AgentRequestHeader;
    if (r.v !== AGENT_PROTOCOL_VERSION) return `unsupported protocol version ${typeof r.v === "number" ? r.v : typeof r.v}`;
    if (
      typeof r.op !== "string" ||
      typeof r.host !== "string" ||
      typeof r.ts !== "number" ||
      typeof r.nonce !== "string" ||
      !/^[0-9a-f]{32}$/.test(r.nonce)
    ) {
      return "the request lacks op, host, ts or nonce";
    }
    if (!Number.isSafeInteger(r.bodyBytes) || r.bodyBytes < 0 || typeof r.bodySha256 !== "string" || !/^[0-9a-f]{64}$/.test(r.bodySha256)) {
      return "the request lacks its body's size or digest";
    }
    if (!sameMac(mac(secret, requestText(r)), r.mac)) return "the request is not signed with this cluster's secret";
    if (r.host !== hostName) return `the request is for host ${r.host}, this is ${hostName}`;
    if (r.bodyBytes > MAX_BODY_BYTES) return `the request's body of ${r.bodyBytes} bytes is over ${MAX_BODY_BYTES}`;
    if (Math.abs(now - r.ts) > MAX_CLOCK_SKEW_MS) return "the request is too old (or the clocks differ by over a minute)";
    this.seen.expire(now);
    if (this.seen.has(r.nonce)) return "the request was already used (replay)";
    this.seen.add(r.nonce, now);
    return undefined;
  }
}
