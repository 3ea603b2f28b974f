/**
 * Structure-aware mutations of JSON messages (agent requests, control requests, clone orders):
 * a field replaced by a value of another type or at an edge, a field removed or added, a value
 * moved elsewhere. Keys an object inherits from Object.prototype ("toString", "__proto__") and
 * nesting deeper than JSON.stringify can walk are among the values tried: both reach decoders
 * only from a hostile peer.
 */
import type { Rng } from "../support/rng.ts";
import { mutateBytes } from "./mutate.ts";

/** JSON text spliced in as it is: what a value tree cannot hold (nesting deep enough to overflow a recursive walk). */
class RawJson {
  constructor(readonly text: string) {}
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json } | RawJson;

const DEEP = 60_000;

function edgeValue(rng: Rng, strings: readonly string[]): Json {
  // Rare: JSON.stringify takes seconds to overflow on it, and one such case per run is plenty.
  if (rng.bool(0.002)) return new RawJson("[".repeat(DEEP) + "]".repeat(DEEP));
  if (strings.length > 0 && rng.bool(0.2)) return rng.pick(strings);
  return rng.pick<() => Json>([
    () => null,
    () => true,
    () => false,
    () => 0,
    () => -1,
    () => 1.5,
    () => -0.5,
    () => 2 ** 53,
    () => 2 ** 64,
    () => 1e308,
    () => -1e308,
    () => 0xffffffff,
    () => 65,
    () => "",
    () => "x".repeat(rng.int(64, 70_000)),
    () => "\u0000\u001b[2J\ud800",
    () => "../../etc/passwd",
    () => [],
    () => ({}),
    () => objectWith("toString", 1),
    () => objectWith("valueOf", {}),
    () => objectWith("__proto__", objectWith("x", 1)),
    () => Array.from({ length: rng.int(65, 5000) }, () => 1),
  ])();
}

/** An object with `key` as its own property, even for "__proto__" (as JSON.parse makes it). */
function objectWith(key: string, value: Json): { [key: string]: Json } {
  const out: { [key: string]: Json } = {};
  Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
  return out;
}

export function stringify(value: Json): string {
  if (value instanceof RawJson) return value.text;
  if (Array.isArray(value)) return `[${value.map(stringify).join(",")}]`;
  if (value !== null && typeof value === "object")
    return `{${Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}:${stringify(v)}`)}}`;
  return JSON.stringify(value);
}

/** Every container in the tree with the keys it holds, so a mutation can pick any field at any depth. */
function containers(value: Json, out: Array<Json[] | { [key: string]: Json }> = []): Array<Json[] | { [key: string]: Json }> {
  if (value === null || typeof value !== "object" || value instanceof RawJson) return out;
  out.push(value);
  for (const child of Object.values(value)) containers(child, out);
  return out;
}

/** A copy, so a value moved elsewhere in the tree never makes it a cycle. */
function copy(value: Json): Json {
  if (value === null || typeof value !== "object" || value instanceof RawJson) return value;
  if (Array.isArray(value)) return value.map(copy);
  const out: { [key: string]: Json } = {};
  for (const [k, v] of Object.entries(value)) set(out, k, copy(v));
  return out;
}

function set(container: Json[] | { [key: string]: Json }, key: string | number, value: Json): void {
  Object.defineProperty(container, key, { value, enumerable: true, writable: true, configurable: true });
}

/**
 * One to three structural mutations of a JSON value; `keys` are field names the decoder knows,
 * `strings` values worth trying in its string fields.
 */
export function mutateJson(value: Json, rng: Rng, keys: readonly string[], strings: readonly string[] = []): Json {
  let root = value;
  for (let n = rng.int(1, 3); n > 0; n--) {
    const all = containers(root);
    if (all.length === 0 || rng.bool(0.03)) {
      root = edgeValue(rng, strings);
      continue;
    }
    const target = rng.pick(all);
    const existing = Object.keys(target);
    const fresh = Array.isArray(target) ? target.length : rng.pick([...keys, "toString", "__proto__", "constructor"]);
    const key = existing.length > 0 && rng.bool(0.75) ? rng.pick(existing) : fresh;
    const choice = rng.int(0, 9);
    if (choice < 5) set(target, key, edgeValue(rng, strings));
    else if (choice < 7 && existing.length > 0) {
      if (Array.isArray(target)) target.splice(Number(key), 1);
      else delete (target as Record<string, Json>)[String(key)];
    } else if (choice < 9) set(target, key, copy(rng.pick(all)));
    else {
      const current = (target as Record<string, Json>)[String(key)];
      if (typeof current === "number") set(target, key, rng.pick([current + 1, current - 1, -current, current * 4096, current + 0.5]));
      else if (typeof current === "string") set(target, key, rng.bool() ? current.slice(0, rng.int(0, current.length)) : current + current);
      else set(target, key, edgeValue(rng, strings));
    }
  }
  return root;
}

/** Parses `text` into a tree mutateJson takes; undefined when it is not JSON (then bytes are mutated instead). */
export function parseJson(text: string): Json | undefined {
  try {
    return JSON.parse(text) as Json;
  } catch {
    return undefined;
  }
}

export type { Json };

/**
 * Mutates a JSON message given as bytes: structurally when it parses (then `finish` may fix up the
 * tree, e.g. sign it again), byte by byte when it does not.
 */
export function mutateJsonBytes(
  input: Uint8Array,
  rng: Rng,
  corpus: readonly Uint8Array[],
  keys: readonly string[],
  strings: readonly string[] = [],
  finish?: (tree: Json) => void,
): Uint8Array {
  const tree = parseJson(new TextDecoder().decode(input));
  if (tree === undefined) return mutateBytes(input, rng, corpus);
  const mutated = mutateJson(tree, rng, keys, strings);
  finish?.(mutated);
  return new TextEncoder().encode(stringify(mutated));
}

/** Sets `key` of a JSON object as its own property (even "__proto__"); no-op on other values. */
export function setField(tree: Json, key: string, value: Json): void {
  if (tree !== null && typeof tree === "object" && !Array.isArray(tree) && !(tree instanceof RawJson)) set(tree, key, value);
}
