/**
 * What a clone's VMM process is told when it starts: whose clone it is, where its descriptor and
 * memory come from (with the memory server's token or the family's mcdist key), the cluster it
 * belongs to and the heuristics left off. A process's arguments and environment are readable by
 * every local user (`ps`, /proc/PID/cmdline, /proc/PID/environ), so the record never travels
 * there: the starter writes it as JSON into a pipe (a socket pair) the clone inherits as fd 3, and
 * the clone reads it once and closes it. Its argv carries the VM's name only. Both sides use this
 * one codec; the clone checks every field.
 */
import { closeSync, fstatSync, readSync } from "node:fs";
import { SnowflockError } from "../errors.ts";
import { type ClusterEnvironment, checkClusterEnvironment } from "./cluster-environment.ts";
import { type Heuristic, parseHeuristics } from "../heuristics/heuristics.ts";
import { formatPageServer, type PageServerAddress, parsePageServer } from "../memory/page-server-address.ts";
import { checkName } from "../run-dir.ts";

export interface LaunchRecord {
  parent: string;
  cloneId: number;
  /** The descriptor to restore: a file, or (with mcdist) fetched by multicast and checked against its size and SHA-256. */
  descriptor: { kind: "file"; path: string } | { kind: "mcdist"; bytes: number; sha256: string };
  /** Copy-on-write from the parent's frozen image (/proc/PID/fd/N), or pages from its memory server. */
  memory: { kind: "cow"; imagePath: string } | { kind: "ondemand"; server: PageServerAddress };
  /** For a family spread over a cluster: this host and where every member runs. */
  cluster?: ClusterEnvironment;
  /** Avoidance heuristics left off (the clone's own clones inherit them). */
  heuristicsOff: Heuristic[];
}

/** The descriptor the record arrives on in the clone process. */
export const LAUNCH_RECORD_FD = 3;
const VERSION = 1;
/** Far above the largest real record (a placement of every member of a full family), far below harm. */
export const MAX_LAUNCH_RECORD_BYTES = 256 << 10;
const MAX_PATH = 4096;
const TOP_KEYS = new Set(["v", "parent", "cloneId", "descriptor", "memory", "cluster", "heuristicsOff"]);

/** The clone's VM name, the only thing its command line says. */
export function launchName(record: Pick<LaunchRecord, "parent" | "cloneId">): string {
  return `${record.parent}.${record.cloneId}`;
}

export function encodeLaunchRecord(record: LaunchRecord): Uint8Array {
  const memory = record.memory.kind === "cow" ? record.memory : { kind: "ondemand", server: formatPageServer(record.memory.server) };
  const { parent, cloneId, descriptor, cluster, heuristicsOff } = record;
  return new TextEncoder().encode(JSON.stringify({ v: VERSION, parent, cloneId, descriptor, memory, cluster, heuristicsOff }));
}

function fail(problem: string): never {
  throw new SnowflockError("USAGE", `bad launch record: ${problem}`, "a clone process is started by snowflock itself, never by hand");
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isWhole(value: unknown, min: number, max: number): value is number {
  return typeof value === "number" && Number.isInteger(value) && value >= min && value <= max;
}

function checkPath(value: unknown, field: string): string {
  if (typeof value !== "string" || value.length === 0 || value.length > MAX_PATH || value.includes("\0")) fail(`${field} must be a path`);
  return value;
}

function checkDescriptor(value: unknown): LaunchRecord["descriptor"] {
  if (!isObject(value)) fail("descriptor must be an object");
  if (value.kind === "file") return { kind: "file", path: checkPath(value.path, "descriptor.path") };
  if (value.kind !== "mcdist") fail("descriptor.kind must be file or mcdist");
  const { bytes, sha256 } = value;
  if (!isWhole(bytes, 1, 1 << 30)) fail("descriptor.bytes must be a positive size");
  if (typeof sha256 !== "string" || !/^[0-9a-f]{64}$/.test(sha256)) fail("descriptor.sha256 must be 64 hex digits");
  return { kind: "mcdist", bytes, sha256 };
}

function checkMemory(value: unknown): LaunchRecord["memory"] {
  if (!isObject(value)) fail("memory must be an object");
  if (value.kind === "cow") return { kind: "cow", imagePath: checkPath(value.imagePath, "memory.imagePath") };
  if (value.kind !== "ondemand") fail("memory.kind must be cow or ondemand");
  if (typeof value.server !== "string") fail("memory.server must be a memory-server address");
  return { kind: "ondemand", server: parsePageServer(value.server) };
}

/** Checks a record field by field; anything missing, mistyped, unknown or too large is refused. */
export function decodeLaunchRecord(bytes: Uint8Array): LaunchRecord {
  if (bytes.byteLength === 0) fail("it is empty");
  if (bytes.byteLength > MAX_LAUNCH_RECORD_BYTES) fail(`more than ${MAX_LAUNCH_RECORD_BYTES} bytes`);
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    fail("not UTF-8 JSON");
  }
  if (!isObject(value)) fail("not a JSON object");
  const unknown = Object.keys(value).find((key) => !TOP_KEYS.has(key));
  if (unknown !== undefined) fail(`unknown field '${unknown.slice(0, 40)}'`);
  if (value.v !== VERSION) fail(`version must be ${VERSION}`);
  if (typeof value.parent !== "string") fail("parent must be a VM name");
  const parent = checkName(value.parent);
  const { cloneId } = value;
  if (!isWhole(cloneId, 1, 1_000_000)) fail("cloneId must be a whole number from 1 to 1000000");
  const memory = checkMemory(value.memory);
  const descriptor = checkDescriptor(value.descriptor);
  const byMulticast = memory.kind === "ondemand" && memory.server.kind === "mcdist";
  if (descriptor.kind === "mcdist" && !byMulticast) fail("a descriptor sent by multicast needs an mcdist memory server");
  const cluster = value.cluster === undefined ? undefined : checkClusterEnvironment(value.cluster);
  const off = value.heuristicsOff;
  if (!Array.isArray(off) || !off.every((h) => typeof h === "string")) fail("heuristicsOff must be a list of names");
  return { parent, cloneId, descriptor, memory, cluster, heuristicsOff: parseHeuristics(off as string[]) };
}

/** In the clone process: reads the record its starter wrote to fd 3 (up to EOF), then closes it. */
export function readLaunchRecord(fd = LAUNCH_RECORD_FD): LaunchRecord {
  // The starter's "pipe" is a socket pair (libuv's kind of pipe); anything else on fd 3 is not ours.
  let isPipe = false;
  try {
    const stat = fstatSync(fd);
    isPipe = stat.isFIFO() || stat.isSocket();
  } catch {
    isPipe = false;
  }
  if (!isPipe) fail(`nothing was handed over on fd ${fd}`);
  const buffer = new Uint8Array(MAX_LAUNCH_RECORD_BYTES + 1);
  let length = 0;
  try {
    while (length < buffer.byteLength) {
      const got = readChunk(fd, buffer.subarray(length));
      if (got === 0) break;
      length += got;
    }
  } finally {
    closeSync(fd);
  }
  return decodeLaunchRecord(buffer.subarray(0, length));
}

/** One read; a pipe left non-blocking by its creator is waited on rather than failed. */
function readChunk(fd: number, into: Uint8Array): number {
  for (;;) {
    try {
      return readSync(fd, into, 0, into.byteLength, null);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EAGAIN") fail(`cannot read fd ${fd}: ${(error as Error).message}`);
      Bun.sleepSync(1);
    }
  }
}
