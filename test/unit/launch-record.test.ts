/** The launch record a clone process reads on fd 3: what it accepts, and everything it refuses with one clear line. */
import { describe, expect, test } from "bun:test";
import { closeSync, constants, openSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import {
  decodeLaunchRecord,
  encodeLaunchRecord,
  type LaunchRecord,
  MAX_LAUNCH_RECORD_BYTES,
  readLaunchRecord,
} from "../../src/clone/launch-record.ts";
import { SnowflockError } from "../../src/errors.ts";
import { formatPageServer } from "../../src/memory/page-server-address.ts";
import { testRunDir } from "../support/cli.ts";
import { leaks } from "../support/process-secrets.ts";

const token = new Uint8Array(32).fill(7);
const key = new Uint8Array(32).fill(9);
const cluster = { inventory: "/run/sf/cluster.json", host: "h2", placement: { web: "h1", "web.3": "h2" }, parentIncarnation: "abc" };
const file = { kind: "file" as const, path: "/run/sf/web.sfd" };
const records: LaunchRecord[] = [
  { parent: "web", cloneId: 1, descriptor: file, memory: { kind: "cow", imagePath: "/proc/42/fd/9" }, heuristicsOff: [] },
  {
    parent: "web",
    cloneId: 2,
    descriptor: file,
    memory: { kind: "ondemand", server: { kind: "unix", path: "/run/sf/web.sock" } },
    heuristicsOff: ["prefetch"],
  },
  {
    parent: "web",
    cloneId: 3,
    descriptor: file,
    memory: { kind: "ondemand", server: { kind: "tcp", address: "10.77.0.1", port: 4000, token } },
    cluster,
    heuristicsOff: [],
  },
  {
    parent: "web",
    cloneId: 4,
    descriptor: { kind: "mcdist", bytes: 5000, sha256: "cd".repeat(32) },
    memory: { kind: "ondemand", server: { kind: "mcdist", server: { kind: "udp", address: "10.77.0.1" }, family: 5, key, mtu: 1500 } },
    cluster,
    heuristicsOff: ["known-zero", "free-pages"],
  },
  {
    parent: "web",
    cloneId: 5,
    descriptor: file,
    memory: { kind: "ondemand", server: { kind: "image", path: "/proc/42/fd/9" } },
    heuristicsOff: [],
  },
];

/** A valid record as a JSON object, to break one field at a time. */
const valid = () => JSON.parse(new TextDecoder().decode(encodeLaunchRecord(records[2]!))) as Record<string, unknown>;
const bytesOf = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));

function refusal(bytes: Uint8Array): string {
  try {
    decodeLaunchRecord(bytes);
  } catch (error) {
    expect(error).toBeInstanceOf(SnowflockError);
    const message = (error as SnowflockError).render();
    expect(message).not.toContain("\n");
    return message;
  }
  throw new Error("the record was accepted");
}

describe("launch record", () => {
  test("every kind of record comes back as it was encoded", () => {
    for (const record of records) expect(decodeLaunchRecord(encodeLaunchRecord(record))).toEqual(record);
  });

  test("missing fields are refused, each by name", () => {
    for (const field of ["v", "parent", "cloneId", "descriptor", "memory", "heuristicsOff"]) {
      const record = valid();
      delete record[field];
      expect(refusal(bytesOf(record))).toMatch(new RegExp(`^bad launch record: ${field === "v" ? "version" : field}`));
    }
  });

  test("fields of the wrong type or out of range are refused", () => {
    const broken: Array<[string, (r: Record<string, unknown>) => void, RegExp]> = [
      ["parent a number", (r) => (r.parent = 5), /parent must be a VM name/],
      ["parent not a VM name", (r) => (r.parent = "../etc"), /bad VM name/],
      ["cloneId a string", (r) => (r.cloneId = "1"), /cloneId must be/],
      ["cloneId 0", (r) => (r.cloneId = 0), /cloneId must be/],
      ["cloneId fractional", (r) => (r.cloneId = 1.5), /cloneId must be/],
      ["descriptor a string", (r) => (r.descriptor = "/x.sfd"), /descriptor must be an object/],
      ["descriptor of no kind", (r) => (r.descriptor = { path: "/x.sfd" }), /descriptor.kind/],
      ["descriptor path empty", (r) => (r.descriptor = { kind: "file", path: "" }), /descriptor.path must be a path/],
      ["descriptor path with NUL", (r) => (r.descriptor = { kind: "file", path: "/a\0b" }), /descriptor.path must be a path/],
      ["mcdist descriptor, bad digest", (r) => (r.descriptor = { kind: "mcdist", bytes: 10, sha256: "zz" }), /sha256/],
      [
        "mcdist descriptor without an mcdist server",
        (r) => (r.descriptor = { kind: "mcdist", bytes: 10, sha256: "ab".repeat(32) }),
        /needs an mcdist memory server/,
      ],
      ["memory of an unknown kind", (r) => (r.memory = { kind: "floppy" }), /memory.kind/],
      ["memory server not text", (r) => (r.memory = { kind: "ondemand", server: { kind: "tcp" } }), /memory.server/],
      [
        "memory server with a short token",
        (r) => (r.memory = { kind: "ondemand", server: "tcp:10.0.0.1:80:abcd" }),
        /bad memory-server address/,
      ],
      ["heuristicsOff a string", (r) => (r.heuristicsOff = "prefetch"), /heuristicsOff must be a list/],
      ["heuristicsOff unknown", (r) => (r.heuristicsOff = ["telepathy"]), /unknown heuristic 'telepathy'/],
      ["cluster not an object", (r) => (r.cluster = "h2"), /bad cluster environment: not an object/],
      [
        "cluster placement wrong",
        (r) => (r.cluster = { ...cluster, placement: [] }),
        /bad cluster environment: placement must be an object/,
      ],
      ["cluster with an extra field", (r) => (r.cluster = { ...cluster, secret: "x" }), /bad cluster environment: unknown field 'secret'/],
      ["an unknown field", (r) => (r.env = { LD_PRELOAD: "/x.so" }), /unknown field 'env'/],
      ["another version", (r) => (r.v = 2), /version must be 1/],
    ];
    for (const [what, breakIt, expected] of broken) {
      const record = valid();
      breakIt(record);
      expect({ what, message: refusal(bytesOf(record)) }).toEqual({ what, message: expect.stringMatching(expected) });
    }
  });

  test("what is not a JSON object, empty or oversized input is refused before it is parsed", () => {
    for (const text of ["", "null", "[1]", '"web"', "{", "\u0000"])
      expect(refusal(new TextEncoder().encode(text))).toMatch(/^bad launch record: /);
    expect(refusal(new Uint8Array([0x7b, 0xff, 0x7d]))).toMatch(/not UTF-8 JSON/);
    const padded = valid();
    padded.parent = "web";
    const huge = new TextEncoder().encode(JSON.stringify(padded).replace("{", `{${" ".repeat(MAX_LAUNCH_RECORD_BYTES)}`));
    expect(refusal(huge)).toMatch(/more than 262144 bytes/);
  });

  test("the process tests' secret finder sees a token or key in every form it was ever given to a clone", () => {
    const [hexToken, hexKey] = [Buffer.from(token).toString("hex"), Buffer.from(key).toString("hex")];
    const seen = (text: string, secret: string) => leaks([{ pid: 1, args: ["snowflock", text], environ: [] }], [secret]).length > 0;
    type Ondemand = Extract<LaunchRecord["memory"], { kind: "ondemand" }>;
    const [tcp, mcdist] = [records[2]!.memory as Ondemand, records[3]!.memory as Ondemand];
    expect(seen(new TextDecoder().decode(encodeLaunchRecord(records[2]!)), hexToken)).toBe(true);
    expect(seen(formatPageServer(tcp.server), hexToken)).toBe(true);
    expect(seen(formatPageServer(mcdist.server).slice("mcdist:".length), hexKey)).toBe(true); // inside base64url JSON
    expect(seen("web.3", hexToken)).toBe(false);
  });

  test("read from a pipe to its end; no pipe, an oversized record or a closed writer with nothing said is refused", () => {
    const dir = testRunDir();
    const fifo = (bytes: Uint8Array) => {
      const path = join(dir, `fifo-${Math.random()}`);
      expect(Bun.spawnSync(["mkfifo", "-m", "600", path]).exitCode).toBe(0);
      const reader = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
      const writer = openSync(path, "w");
      // A pipe holds 64 KiB: more is written by a child (holding the writing end) while we read.
      if (bytes.byteLength <= 60_000) writeSync(writer, bytes);
      else Bun.spawn(["head", "-c", String(bytes.byteLength), "/dev/zero"], { stdout: writer, stderr: "ignore" });
      closeSync(writer);
      return reader;
    };
    expect(readLaunchRecord(fifo(encodeLaunchRecord(records[3]!)))).toEqual(records[3]!);
    expect(() => readLaunchRecord(fifo(new Uint8Array()))).toThrow("bad launch record: it is empty");
    expect(() => readLaunchRecord(fifo(new Uint8Array(MAX_LAUNCH_RECORD_BYTES + 100)))).toThrow(
      `more than ${MAX_LAUNCH_RECORD_BYTES} bytes`,
    );
    const file = join(dir, "record.json");
    writeFileSync(file, encodeLaunchRecord(records[0]!));
    expect(() => readLaunchRecord(openSync(file, "r"))).toThrow("bad launch record: nothing was handed over on fd");
  });
});
