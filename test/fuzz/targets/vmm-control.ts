/** A VMM's control protocol: request lines as its control socket (and an agent's relay) parses them. */
import { parseRequest } from "../../../src/vmm/protocol.ts";
import type { FuzzTarget } from "../engine.ts";
import { mutateJsonBytes } from "../json.ts";

const OPS = ["status", "kill", "descriptor", "fork", "message", "clone-started", "clone-ended"];
const KEYS = [
  "v",
  "op",
  "path",
  "clones",
  "memory",
  "spread",
  "transport",
  "from",
  "data",
  "cloneId",
  "builtMs",
  "runningMs",
  "status",
  "incarnation",
  "faults",
  "pagesFetched",
  "pagesZeroFilled",
  "bytesReceived",
  "pagesMulticast",
  "framesRejected",
  "faultServiceHistogram",
];

const line = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));

export const vmmControlTarget: FuzzTarget = {
  name: "vmm-control",
  seeds: () => [
    line({ v: 1, op: "status" }),
    line({ v: 1, op: "descriptor", path: "/tmp/x.sfd" }),
    line({ v: 1, op: "fork", clones: 4, memory: "ondemand", spread: true, transport: "udp" }),
    line({ v: 1, op: "message", from: 2, data: "aGVsbG8=" }),
    line({ v: 1, op: "clone-started", cloneId: 3, builtMs: 10.5, runningMs: 12 }),
    line({
      v: 1,
      op: "clone-ended",
      cloneId: 3,
      status: 0,
      incarnation: "i1",
      memory: { faults: 1, pagesFetched: 2, pagesZeroFilled: 3, bytesReceived: 4, pagesMulticast: 5, faultServiceHistogram: [1, 2] },
    }),
  ],
  mutate: (input, rng, corpus) => mutateJsonBytes(input, rng, corpus, KEYS, [...OPS, "cow", "ondemand", "tcp", "packet", "relative/path"]),
  run(input) {
    const parsed = parseRequest(new TextDecoder().decode(input));
    if ("error" in parsed) {
      if (typeof parsed.error !== "string") throw new Error("parseRequest's error is not a string");
      return "refused";
    }
    if (parsed.v !== 1 || !OPS.includes(parsed.op)) throw new Error(`parseRequest passed ${JSON.stringify(parsed).slice(0, 100)}`);
    return "accepted";
  },
  expected: () => false,
};
