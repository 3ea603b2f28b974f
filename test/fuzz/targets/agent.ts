/**
 * The agent's control plane: requests as an agent reads them (a header line checked by
 * ReplayGuard.check — version, fields, MAC, host, clock, nonce — then the body it vouches for),
 * answers as a client checks them (verifyAnswer), and clone orders (checkCloneOrder), whose
 * memory-server field is checked by parsePageServer. Half the mutated requests and answers are signed again with the cluster's secret, so mutations also
 * reach what only a member with the secret (or a bug in one) can send.
 */
import { createHash, createHmac } from "node:crypto";
import {
  AGENT_PROTOCOL_VERSION,
  type AgentRequestHeader,
  bodyMatches,
  MAX_HEADER_BYTES,
  ReplayGuard,
  signAnswer,
  verifyAnswer,
} from "../../../src/cluster/agent-protocol.ts";
import { checkCloneOrder } from "../../../src/cluster/clone-order.ts";
import { checkFamilyEvent, FAMILY_MESSAGE } from "../../../src/cluster/family-event.ts";
import { SnowflockError } from "../../../src/errors.ts";
import { formatPageServer } from "../../../src/memory/page-server-address.ts";
import type { Rng } from "../../support/rng.ts";
import { check, type FuzzTarget } from "../engine.ts";
import { type Json, mutateJsonBytes, parseJson, setField, stringify } from "../json.ts";

const SECRET = `${"5ec2e7".repeat(10)}abcd`;
const HOST = "h1";
const NOW = 1_800_000_000_000;
const KEY_HEX = "ab".repeat(32);

const KEYS = [
  "v",
  "op",
  "host",
  "ts",
  "nonce",
  "bodyBytes",
  "bodySha256",
  "mac",
  "parent",
  "parentHost",
  "descriptor",
  "bytes",
  "sha256",
  "cloneIds",
  "placement",
  "memory",
  "parentIncarnation",
  "heuristicsOff",
  "vm",
  "request",
  "ok",
  "error",
  "cloneId",
  "status",
  "parentDomain",
  "replySeq",
  "domainMemory",
  "event",
  "to",
  "from",
  "message",
  "result",
];

const mcdistAddress = (json: string) => `mcdist:${Buffer.from(json).toString("base64url")}`;

/** Memory-server addresses, good and bad, for the string fields of orders and addresses. */
export const ADDRESSES = [
  formatPageServer({ kind: "tcp", address: "10.0.0.1", port: 7000, token: new Uint8Array(32).fill(3) }),
  formatPageServer({
    kind: "mcdist",
    server: { kind: "udp", address: "239.1.2.3:7400" },
    family: 77,
    key: new Uint8Array(32).fill(9),
    mtu: 1500,
  }),
  formatPageServer({
    kind: "mcdist",
    server: { kind: "packet", address: "02:00:00:00:00:01" },
    family: 1,
    key: new Uint8Array(32),
    mtu: 9000,
    transport: { kind: "udp", interface: "eth0", address: "10.0.0.2", port: 7400 },
  }),
  "unix:/run/x.sock",
  "tcp:10.0.0.1:0:00",
  `tcp:999.0.0.1:1:${KEY_HEX}`,
  "mcdist:",
  mcdistAddress("null"),
  mcdistAddress("[]"),
  mcdistAddress("7"),
  mcdistAddress(`{"server":{"kind":"udp","address":"a"},"family":1,"key":"${KEY_HEX}","mtu":1500,"transport":null}`),
  mcdistAddress(
    `{"server":{"kind":"udp","address":"a"},"family":1,"key":"${KEY_HEX}","mtu":1500,` +
      `"transport":{"kind":"udp","interface":"e","address":"x"}}`,
  ),
];

function randomOrder(rng: Rng): Record<string, unknown> {
  const multicast = rng.bool();
  const ids = rng.shuffle(Array.from({ length: 8 }, (_, i) => i + 1)).slice(0, rng.int(1, 4));
  return {
    parent: "vm1",
    parentHost: "h0",
    descriptor: multicast
      ? { bytes: rng.int(1, 1 << 20), sha256: "0f".repeat(32) }
      : Buffer.from(rng.bytes(rng.int(1, 60))).toString("base64"),
    cloneIds: ids,
    placement: Object.fromEntries(ids.map((id) => [`vm1.${id}`, rng.pick(["h0", "h1", "h2"])])),
    memory: multicast ? ADDRESSES[1]! : ADDRESSES[0]!,
    parentIncarnation: `inc-${rng.int(0, 1e6)}`,
    heuristicsOff: rng.bool() ? [] : ["prefetch"],
    ...(rng.bool() && { parentDomain: rng.int(1, 40), replySeq: String(rng.int(1, 1e9)) }),
  };
}

/** A family event as one dom0's agent sends another (family-event.ts). */
function randomFamilyEvent(rng: Rng): Record<string, unknown> {
  const parentDomain = rng.int(1, 40);
  return rng.pick([
    { event: "ended", parentDomain, cloneId: rng.int(1, 8), status: rng.pick([0, 1, -9, -11]), result: "0f".repeat(rng.int(1, 32)) },
    { event: "kill", parentHost: "h0", parentDomain, cloneId: rng.int(1, 8) },
    { event: "end-family", parentHost: "h0", parentDomain },
    { event: "message", parentHost: "h0", parentDomain, to: rng.int(0, 4), from: rng.int(0, 4), message: `hello-${rng.int(0, 99)}` },
  ]);
}

/** A request as it travels: the header line, a newline, the body (agent-protocol.ts). */
function splitRequest(input: Uint8Array): { header: Uint8Array; body: Uint8Array } {
  const newline = input.indexOf(10);
  if (newline < 0) return { header: input, body: new Uint8Array(0) };
  return { header: input.subarray(0, newline), body: input.subarray(newline + 1) };
}

const joinRequest = (header: Uint8Array, body: Uint8Array) => new Uint8Array(Buffer.concat([header, Uint8Array.of(10), body]));

/** The header's MAC as the agent computes it (agent-protocol.ts requestText); undefined when its fields make no text. */
function headerMac(value: unknown): string | undefined {
  try {
    const r = value as Record<string, unknown>;
    const text = [r.v, r.op, r.host, r.ts, r.nonce, r.bodyBytes, r.bodySha256].join("\n");
    return createHmac("sha256", Buffer.from(SECRET, "hex")).update(text).digest("hex");
  } catch {
    return undefined;
  }
}

/** Signs a (mutated) header again for `body`, as a member holding the secret would. */
function signHeader(tree: Json, body: Uint8Array): void {
  setField(tree, "bodyBytes", body.byteLength);
  setField(tree, "bodySha256", createHash("sha256").update(body).digest("hex"));
  const mac = headerMac(parseJson(stringify(tree)));
  if (mac !== undefined) setField(tree, "mac", mac);
}

function request(rng: Rng, op: string, body: unknown): Uint8Array {
  const text = new TextEncoder().encode(JSON.stringify(body));
  const nonce = Buffer.from(rng.bytes(16)).toString("hex");
  const header: Json = { v: AGENT_PROTOCOL_VERSION, op, host: HOST, ts: NOW - rng.int(0, 50_000), nonce };
  signHeader(header, text);
  return joinRequest(new TextEncoder().encode(stringify(header)), text);
}

const parseLine = (input: Uint8Array): unknown => parseJson(new TextDecoder().decode(input));

export const agentRequestTarget: FuzzTarget = {
  name: "agent-request",
  seeds: (rng) => [
    request(rng, "hello", null),
    request(rng, "clone", randomOrder(rng)),
    request(rng, "clone", randomOrder(rng)),
    request(rng, "relay", { vm: "vm1.2", request: { op: "clone-ended", cloneId: 2, status: 0, incarnation: "inc-1" } }),
  ],
  mutate(input, rng, corpus) {
    let { header, body } = splitRequest(input);
    if (rng.bool()) body = mutateJsonBytes(body, rng, corpus, KEYS, ADDRESSES);
    const resign = rng.bool();
    header = mutateJsonBytes(header, rng, corpus, rng.bool(0.7) ? [] : KEYS, ADDRESSES, (tree) => resign && signHeader(tree, body));
    return joinRequest(header, body);
  },
  run(input) {
    // As the agent reads a request: a header line of at most MAX_HEADER_BYTES, checked before its body is read.
    const { header, body } = splitRequest(input);
    if (header.byteLength > MAX_HEADER_BYTES) return "refused";
    const value = parseLine(header);
    const guard = new ReplayGuard();
    const refusal = guard.check(SECRET, HOST, value, NOW);
    if (refusal !== undefined) {
      if (typeof refusal !== "string") throw new Error(`ReplayGuard.check returned ${typeof refusal}`);
      return "refused";
    }
    if (guard.check(SECRET, HOST, value, NOW) === undefined) throw new Error("the same request was accepted twice");
    const checked = value as AgentRequestHeader;
    if (!bodyMatches(checked, body)) return "refused";
    if (checked.op === "clone") checkCloneOrder(parseLine(body));
    if (checked.op === "family") checkFamilyEvent(parseLine(body));
    return "accepted";
  },
  expected: (error) => error instanceof SnowflockError,
};

const NONCE = "0123456789abcdef".repeat(2);

function signTreeAnswer(tree: Json): void {
  try {
    const value = parseJson(stringify(tree)) as unknown as Parameters<typeof signAnswer>[1];
    setField(tree, "mac", signAnswer(SECRET, value).mac);
  } catch {
    // Fields that make no answer text stay unsigned.
  }
}

export const agentAnswerTarget: FuzzTarget = {
  name: "agent-answer",
  seeds: (rng) =>
    [
      { ok: true, nonce: NONCE, body: { host: HOST, pid: 1, version: "0.1.0", freeBytes: 1e9, maxClones: 16, clones: [] } },
      {
        ok: true,
        nonce: NONCE,
        body: { host: HOST, started: [{ cloneId: 1, name: "vm1.1", pid: 9, builtMs: 1, runningMs: 2 }], failed: [] },
      },
      { ok: false, nonce: NONCE, error: "bad clone order: no parent" },
    ]
      .map((a) => JSON.stringify(rng.bool(0.9) ? signAnswer(SECRET, a) : { ok: false, error: "unauthenticated: x" }))
      .map((text) => new TextEncoder().encode(text)),
  mutate: (input, rng, corpus) => mutateJsonBytes(input, rng, corpus, KEYS, [NONCE], (tree) => rng.bool() && signTreeAnswer(tree)),
  run(input) {
    const result = verifyAnswer(SECRET, NONCE, parseLine(input));
    if ("verified" in result) {
      if (result.verified.nonce !== NONCE) throw new Error("verifyAnswer accepted an answer to another request");
      return "accepted";
    }
    if (typeof result.problem !== "string") throw new Error(`verifyAnswer's problem is ${typeof result.problem}, not a string`);
    return "refused";
  },
  expected: () => false,
};

export const cloneOrderTarget: FuzzTarget = {
  name: "clone-order",
  seeds: (rng) => Array.from({ length: 4 }, () => new TextEncoder().encode(JSON.stringify(randomOrder(rng)))),
  mutate: (input, rng, corpus) => mutateJsonBytes(input, rng, corpus, KEYS, ADDRESSES),
  run(input) {
    const value = parseLine(input);
    if (value === undefined) return "refused";
    const order = checkCloneOrder(value);
    check(new Set(order.cloneIds).size === order.cloneIds.length && order.cloneIds.length > 0, "checkCloneOrder passed bad clone IDs");
    return "accepted";
  },
  expected: (error) => error instanceof SnowflockError,
};

export const familyEventTarget: FuzzTarget = {
  name: "family-event",
  seeds: (rng) => Array.from({ length: 4 }, () => new TextEncoder().encode(JSON.stringify(randomFamilyEvent(rng)))),
  mutate: (input, rng, corpus) => mutateJsonBytes(input, rng, corpus, KEYS, ["h0", "", "ok", "\u0000"]),
  run(input) {
    const value = parseLine(input);
    if (value === undefined) return "refused";
    const event = checkFamilyEvent(value);
    check(Number.isInteger(event.parentDomain) && event.parentDomain >= 1, "checkFamilyEvent passed a bad parentDomain");
    if (event.event === "message") check(FAMILY_MESSAGE.test(event.message), "checkFamilyEvent passed a bad message");
    return "accepted";
  },
  expected: (error) => error instanceof SnowflockError,
};
