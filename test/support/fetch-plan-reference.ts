/** The fetch plan computed byte by byte in plain TypeScript: the reference for the WASM one (tests and bench). */
import type { FetchPlan, Heuristic } from "../../src/heuristics/heuristics.ts";

export function referenceFetchPlan(nonZero: Uint8Array, free: Uint8Array | undefined, off: readonly Heuristic[]): FetchPlan {
  const fetch = new Uint8Array(nonZero.byteLength);
  const spared = new Uint8Array(nonZero.byteLength);
  for (let i = 0; i < fetch.byteLength; i++) {
    const wanted = off.includes("known-zero") ? 0xff : nonZero[i]!;
    const freeByte = free && !off.includes("free-pages") ? free[i]! : 0;
    fetch[i] = wanted & ~freeByte;
    spared[i] = wanted & freeByte;
  }
  return { fetch, spareByFreePages: spared };
}
