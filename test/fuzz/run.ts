/**
 * Fuzz by hand, longer than CI does: `bun test/fuzz/run.ts [--target NAME]... [--cases N] [--seed S] [--start I]`.
 * Without --seed a new seed is drawn (and printed), so each run explores new inputs. Every
 * finding's input is minimized-ish, saved under test/fuzz/regressions/<target>/ (which
 * test/fuzz/fuzz.test.ts replays) and printed. Exits 1 when something was found.
 */
import { parseArgs } from "node:util";
import type { Finding } from "./engine.ts";
import { saveRegression } from "./regressions.ts";
import { fuzzTarget } from "./run-target.ts";
import { TARGETS, targetNamed } from "./targets/index.ts";

const { values } = parseArgs({
  options: {
    target: { type: "string", multiple: true },
    cases: { type: "string", default: "20000" },
    seed: { type: "string" },
    start: { type: "string", default: "0" },
  },
});
const count = (text: string, what: string) => {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`--${what} takes a whole number, not '${text}'`);
  return n;
};
const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : count(values.seed, "seed");
const names = values.target ?? TARGETS.map((t) => t.name);
names.forEach(targetNamed);
const cases = count(values.cases, "cases");
const start = count(values.start, "start");

function show(f: Finding): void {
  console.log(`  FINDING ${f.kind}: ${f.error}${f.where ? ` at ${f.where}` : ""} (seed ${f.seed}, case ${f.caseIndex})`);
  const replay = `bun test/fuzz/run.ts --target ${f.target} --seed ${f.seed} --start ${f.caseIndex} --cases 1`;
  if (!f.input) return void console.log(`    replay: ${replay}`);
  const { path, added } = saveRegression(f.target, f.input);
  const hex = Buffer.from(f.input.subarray(0, 256)).toString("hex");
  console.log(`    ${added ? "saved" : "already saved"}: ${path} (${f.input.byteLength} bytes)`);
  console.log(`    input: ${hex}${f.input.byteLength > 256 ? "…" : ""}`);
}

console.log(`seed ${seed}, ${cases} cases per target`);
let found = 0;
for (const name of names) {
  const report = await fuzzTarget(name, { seed, cases, start, minimize: true });
  const { accepted, refused, roundTrips, findings } = report;
  const counts = `${accepted} accepted, ${refused} refused, ${roundTrips} round trips`;
  console.log(`${name}: ${cases} cases in ${report.ms} ms: ${counts}, ${findings.length} finding(s)`);
  report.findings.forEach(show);
  found += report.findings.length;
}
process.exit(found > 0 ? 1 : 0);
