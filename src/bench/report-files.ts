/** Where a benchmark's report goes: NAME.json (the whole report) and NAME.svg (its plot) in `dir`. */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export function writeReportFiles(dir: string, name: string, report: unknown, svg: string): { json: string; svg: string } {
  mkdirSync(dir, { recursive: true });
  const paths = { json: join(dir, `${name}.json`), svg: join(dir, `${name}.svg`) };
  writeFileSync(paths.json, `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(paths.svg, svg);
  return paths;
}
