/**
 * The guest kernel image built by build.ts. Imported as a file so that `bun build --compile`
 * embeds it in the executable.
 */
import guestImagePath from "../../guest/build/snowflock-guest.elf" with { type: "file" };
import { readFileSync } from "node:fs";

let cached: Uint8Array | undefined;

export function guestImage(): Uint8Array {
  cached ??= new Uint8Array(readFileSync(guestImagePath));
  return cached;
}
