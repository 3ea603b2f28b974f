/** Launch records: what a clone process reads from fd 3 when it starts (decodeLaunchRecord). */
import { decodeLaunchRecord, encodeLaunchRecord, type LaunchRecord } from "../../../src/clone/launch-record.ts";
import { SnowflockError } from "../../../src/errors.ts";
import { parsePageServer } from "../../../src/memory/page-server-address.ts";
import type { Rng } from "../../support/rng.ts";
import { check, type FuzzTarget, same } from "../engine.ts";
import { mutateJsonBytes } from "../json.ts";
import { ADDRESSES } from "./agent.ts";

const KEYS = [
  "v",
  "parent",
  "cloneId",
  "descriptor",
  "kind",
  "path",
  "bytes",
  "sha256",
  "memory",
  "imagePath",
  "server",
  "cluster",
  "inventory",
  "host",
  "placement",
  "parentIncarnation",
  "heuristicsOff",
];

function randomRecord(rng: Rng): LaunchRecord {
  const multicast = rng.bool();
  const cloneId = rng.int(1, 64);
  return {
    parent: `vm${rng.int(0, 9)}`,
    cloneId,
    descriptor: multicast
      ? { kind: "mcdist", bytes: rng.int(1, 1 << 20), sha256: "e3".repeat(32) }
      : { kind: "file", path: `/run/snowflock/vm.clones-${rng.int(0, 1e6)}.sfd` },
    memory:
      rng.bool(0.3) && !multicast
        ? { kind: "cow", imagePath: `/proc/${rng.int(2, 99999)}/fd/7` }
        : { kind: "ondemand", server: parsePageServer(ADDRESSES[multicast ? 1 : 0]!) },
    cluster: rng.bool()
      ? { inventory: "/etc/snowflock/inventory.json", host: "h1", placement: { [`vm1.${cloneId}`]: "h1" }, parentIncarnation: "inc-1" }
      : undefined,
    heuristicsOff: rng.bool() ? [] : ["prefetch"],
  };
}

export const launchRecordTarget: FuzzTarget = {
  name: "launch-record",
  seeds: (rng) => Array.from({ length: 6 }, () => encodeLaunchRecord(randomRecord(rng))),
  mutate: (input, rng, corpus) => mutateJsonBytes(input, rng, corpus, KEYS, [...ADDRESSES, "file", "mcdist", "cow", "ondemand"]),
  run(input) {
    const { cloneId } = decodeLaunchRecord(input);
    check(Number.isInteger(cloneId) && cloneId >= 1, `decodeLaunchRecord passed clone ID ${cloneId}`);
    return "accepted";
  },
  expected: (error) => error instanceof SnowflockError,
  roundTrip(rng) {
    const record = randomRecord(rng);
    same(decodeLaunchRecord(encodeLaunchRecord(record)), record, "decodeLaunchRecord(encodeLaunchRecord(r))");
  },
};
