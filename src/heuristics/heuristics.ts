/**
 * Avoidance heuristics: pages a clone never fetches because it knows their contents (or will
 * overwrite them before reading). Each can be switched off alone (`--no-heuristic NAME`, or all
 * with `--no-heuristics`) so its effect can be measured. So far:
 *
 *   known-zero   pages the descriptor's bitmap says are zero are zero-filled locally.
 */
import { SnowflockError } from "../errors.ts";

export const HEURISTICS = ["known-zero"] as const;
export type Heuristic = (typeof HEURISTICS)[number];

/** How a clone process learns which heuristics are off (comma-separated names). */
export const HEURISTICS_OFF_VARIABLE = "SNOWFLOCK_HEURISTICS_OFF";

export function parseHeuristics(names: readonly string[]): Heuristic[] {
  const unknown = names.filter((n) => !(HEURISTICS as readonly string[]).includes(n));
  if (unknown.length > 0) throw new SnowflockError("USAGE", `unknown heuristic '${unknown[0]}'`, `the heuristics are: ${HEURISTICS.join(", ")}`);
  return [...new Set(names)] as Heuristic[];
}

export function heuristicsOffFromEnvironment(): Heuristic[] {
  const text = process.env[HEURISTICS_OFF_VARIABLE];
  return text ? parseHeuristics(text.split(",")) : [];
}

/**
 * The pages a clone must fetch rather than fill itself (bit i: page i may be non-zero). With
 * known-zero off, every page is fetched.
 */
export function pagesToFetch(nonZeroPages: Uint8Array, off: readonly Heuristic[]): Uint8Array {
  return off.includes("known-zero") ? new Uint8Array(nonZeroPages.byteLength).fill(0xff) : nonZeroPages;
}
