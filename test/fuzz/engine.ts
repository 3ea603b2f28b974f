/**
 * A small deterministic fuzz engine. Case i of a run is a pure function of (seed, i): a valid
 * input from the target's corpus (made by the real encoders), stacked byte or structure-aware
 * mutations, or a round trip on a generated value. The oracle: a decoder returns or throws its
 * documented typed error; any other exception, a case over the time bound, or a jump of the
 * process's peak memory is a finding.
 */
import { createHash } from "node:crypto";
import { Rng } from "../support/rng.ts";
import { within } from "../support/time.ts";
import { mutateBytes } from "./mutate.ts";

export type Verdict = "accepted" | "refused";

export interface FuzzTarget {
  name: string;
  /** Valid inputs made by the real encoders, where mutations start. */
  seeds(rng: Rng): Uint8Array[];
  /** A structure-aware mutation: fields changed with checksums re-sealed, requests re-signed. */
  mutate?(input: Uint8Array, rng: Rng, corpus: readonly Uint8Array[]): Uint8Array;
  /** Decodes `input`: what the decoder made of it, or throws (an expected error is a refusal). */
  run(input: Uint8Array): Verdict;
  /** The errors the decoder documents. */
  expected(error: unknown): boolean;
  /** decode(encode(x)) == x for an x made from `rng`; throws on a difference. */
  roundTrip?(rng: Rng): void;
}

/** Throws when a round trip or an invariant of a decoder's result does not hold. */
export function check(holds: boolean, what: string): void {
  if (!holds) throw new Error(what);
}

/** Throws when decode(encode(x)) is not x. */
export function same(actual: unknown, expected: unknown, what: string): void {
  check(Bun.deepEquals(actual, expected), `${what} differs`);
}

export type FindingKind = "crash" | "slow" | "memory" | "round-trip";

export interface Finding {
  target: string;
  kind: FindingKind;
  /** Error name and message, or what was exceeded. */
  error: string;
  /** Where the error was thrown (first stack frame in src/), to tell findings apart. */
  where: string;
  seed: number;
  caseIndex: number;
  /** The input (none for a round trip: replay it with its seed and case). */
  input?: Uint8Array;
}

/** A case over this is a finding (slow); the watchdog in run-target.ts ends one over HANG_MS. */
export const CASE_TIME_MS = within(5000);
export const HANG_MS = within(20_000);
/** Peak RSS growing by more than this in one case is a finding (memory). */
export const MEMORY_JUMP_BYTES = 192 * 1024 * 1024;

export type Case = { input: Uint8Array } | { roundTrip: Rng };

function caseRng(seed: number, index: number): Rng {
  return new Rng(Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(index + 1, 0xc2b2ae35));
}

export function makeCase(target: FuzzTarget, corpus: readonly Uint8Array[], seed: number, index: number): Case {
  const rng = caseRng(seed, index);
  if (target.roundTrip && rng.bool(0.1)) return { roundTrip: rng };
  let input = rng.pick(corpus);
  if (rng.bool(0.02)) return { input };
  const structured = target.mutate !== undefined && rng.bool(0.6);
  if (structured) input = target.mutate!(input, rng, corpus);
  if (!structured || rng.bool(0.2)) input = mutateBytes(input, rng, corpus);
  return { input };
}

export function corpusOf(target: FuzzTarget, seed: number): Uint8Array[] {
  return target.seeds(new Rng(seed));
}

function where(error: unknown): string {
  const stack = error instanceof Error ? (error.stack ?? "") : "";
  const frame = stack.split("\n").find((line) => line.includes("/src/")) ?? stack.split("\n")[1] ?? "";
  return frame.replace(/^.*\/(src\/[^):]+:\d+).*$/, "$1").trim();
}

function describe(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message.slice(0, 200)}` : `non-Error thrown: ${String(error).slice(0, 200)}`;
}

const peakRss = () => process.resourceUsage().maxRSS * 1024;

/** Runs one case; the finding if the decoder misbehaved, else its verdict. */
export function runCase(target: FuzzTarget, c: Case, seed: number, caseIndex: number): Finding | Verdict {
  const input = "input" in c ? c.input : undefined;
  const finding = (kind: FindingKind, error: string, at = "") => ({ target: target.name, kind, error, where: at, seed, caseIndex, input });
  const rssBefore = peakRss();
  const started = performance.now();
  let verdict: Verdict;
  try {
    if ("roundTrip" in c) {
      target.roundTrip!(c.roundTrip);
      verdict = "accepted";
    } else verdict = target.run(c.input);
  } catch (error) {
    if ("roundTrip" in c) return finding("round-trip", describe(error), where(error));
    if (!target.expected(error)) return finding("crash", describe(error), where(error));
    verdict = "refused";
  }
  const ms = performance.now() - started;
  if (ms > CASE_TIME_MS) return finding("slow", `took ${Math.round(ms)} ms (bound ${CASE_TIME_MS} ms)`);
  const grown = peakRss() - rssBefore;
  if (grown > MEMORY_JUMP_BYTES) return finding("memory", `peak RSS grew by ${Math.round(grown / 2 ** 20)} MiB in one case`);
  return verdict;
}

/** What tells two findings apart: same kind and, for an exception, same error class and place. */
export function signature(f: Finding): string {
  return f.kind === "crash" || f.kind === "round-trip" ? `${f.kind} ${f.error.split(":")[0]} ${f.where}` : f.kind;
}

/**
 * Shrinks a crash's input while it still crashes the same way: chunks removed, from halves down
 * to single bytes, within a bounded number of tries ("minimized-ish": a checksum over the input
 * stops it early), within a bounded number of tries and time.
 */
export function minimize(target: FuzzTarget, f: Finding, maxTries = 4000, maxMs = 3000): Uint8Array | undefined {
  if (!f.input || f.kind !== "crash") return f.input;
  const same = (input: Uint8Array) => {
    const result = runCase(target, { input }, f.seed, f.caseIndex);
    return typeof result === "object" && signature(result) === signature(f);
  };
  let best = f.input;
  let tries = 0;
  const deadline = performance.now() + maxMs;
  for (let chunk = best.byteLength >> 1; chunk >= 1 && tries < maxTries; chunk >>= 1) {
    for (let at = 0; at < best.byteLength && tries < maxTries && performance.now() < deadline; ) {
      const candidate = Buffer.concat([best.subarray(0, at), best.subarray(at + chunk)]);
      tries++;
      if (same(candidate)) best = new Uint8Array(candidate);
      else at += chunk;
    }
  }
  return best;
}

export function inputHash(input: Uint8Array): string {
  return createHash("sha256").update(input).digest("hex").slice(0, 16);
}
