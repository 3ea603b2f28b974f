/** Inputs that once made a target misbehave, one file each: test/fuzz/regressions/<target>/<hash>.bin. */
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { inputHash } from "./engine.ts";

export const REGRESSIONS_DIR = fileURLToPath(new URL("./regressions/", import.meta.url));

export interface Regression {
  target: string;
  file: string;
  input: Uint8Array;
}

/** Saves `input` as a regression case of `target`; the path, and whether it was new. */
export function saveRegression(target: string, input: Uint8Array): { path: string; added: boolean } {
  const dir = join(REGRESSIONS_DIR, target);
  const path = join(dir, `${inputHash(input)}.bin`);
  if (existsSync(path)) return { path, added: false };
  mkdirSync(dir, { recursive: true });
  writeFileSync(path, input);
  return { path, added: true };
}

export function listRegressions(): Regression[] {
  if (!existsSync(REGRESSIONS_DIR)) return [];
  return readdirSync(REGRESSIONS_DIR, { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .flatMap((d) =>
      readdirSync(join(REGRESSIONS_DIR, d.name))
        .filter((f) => f.endsWith(".bin"))
        .sort()
        .map((file) => ({ target: d.name, file, input: new Uint8Array(readFileSync(join(REGRESSIONS_DIR, d.name, file))) })),
    );
}
