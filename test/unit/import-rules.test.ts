/**
 * The import rules (.dependency-cruiser.cjs, `bun run deps` in CI) fire where they should: on a
 * small tree of fixture modules in a temporary directory, each rule meets one violation. (Each
 * check runs dependency-cruiser twice, a few seconds on a busy machine: hence the time limits.)
 */
import { afterAll, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";

const ROOT = join(import.meta.dir, "../..");
const tree = mkdtempSync(join(tmpdir(), "snowflock-import-rules-"));
afterAll(() => rmSync(tree, { recursive: true, force: true }));

function write(files: Record<string, string>): void {
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(tree, path)), { recursive: true });
    writeFileSync(join(tree, path), text);
  }
}

/** dependency-cruiser with the project's rules, in `cwd`: its JSON report, and its exit status as CI sees it (the `err` reporter). */
function cruise(cwd: string, paths: string[]): { status: number; violations: Array<{ rule: string; from: string; to: string }> } {
  const command = [process.execPath, "--bun", join(ROOT, "node_modules/.bin/depcruise"), "--config", join(ROOT, ".dependency-cruiser.cjs")];
  const json = Bun.spawnSync([...command, "--output-type", "json", ...paths], { cwd });
  const report = JSON.parse(json.stdout.toString()) as {
    summary: { violations: Array<{ rule: { name: string }; from: string; to: string }> };
  };
  const status = Bun.spawnSync([...command, "--output-type", "err", ...paths], { cwd, stdout: "ignore", stderr: "ignore" }).exitCode;
  return { status, violations: report.summary.violations.map((v) => ({ rule: v.rule.name, from: v.from, to: v.to })) };
}

test("each rule fires on its fixture and fails the check", () => {
  write({
    "tsconfig.json": JSON.stringify({
      compilerOptions: { allowImportingTsExtensions: true, noEmit: true, module: "esnext", moduleResolution: "bundler" },
    }),
    "src/errors.ts": "export class SnowflockError extends Error {}\n",
    "src/clone/a.ts": 'import { b } from "./b.ts";\nexport const a = () => b;\n',
    "src/clone/b.ts": 'import { a } from "./a.ts";\nexport const b = () => a;\n',
    "src/sys/files.ts":
      'import { SnowflockError } from "../errors.ts";\nimport { a } from "../clone/a.ts";\nexport const f = [SnowflockError, a];\n',
    "src/cli/main.ts":
      'import { helper } from "../../test/support/helper.ts";\nimport { machine } from ' +
      '"../backend/kvm/machine.ts";\nimport { backend } from "../backend/select.ts";\nexport const m = ' +
      "[helper, machine, backend];\n",
    "src/clone/pipeline.ts":
      'import { machine } from "../backend/kvm/machine.ts";\nimport type { Machine } from ' +
      '"../backend/backend.ts";\nexport const p: Machine = machine;\n',
    "src/backend/kvm/machine.ts": "export const machine = 1;\n",
    "src/backend/backend.ts": "export type Machine = number;\n",
    "src/backend/select.ts": 'import { machine } from "./kvm/machine.ts";\nexport const backend = machine;\n',
    "test/support/helper.ts": "export const helper = 1;\n",
    "bin/snowflock.ts": 'import { m } from "../src/cli/main.ts";\nexport default m;\n',
  });
  const { status, violations } = cruise(tree, ["src", "bin"]);
  const found = (rule: string) => violations.filter((v) => v.rule === rule).map((v) => `${v.from} -> ${v.to}`);
  // A cycle is reported once, at the edge where the cruise closes it.
  expect(found("no-circular")).toHaveLength(1);
  expect(["src/clone/a.ts -> src/clone/b.ts", "src/clone/b.ts -> src/clone/a.ts"]).toContain(found("no-circular")[0]!);
  // src/sys may throw snowflock's typed errors, and import nothing else of ours.
  expect(found("sys-imports-nothing-of-ours")).toEqual(["src/sys/files.ts -> src/clone/a.ts"]);
  expect(found("no-test-code-in-the-binary")).toEqual(["src/cli/main.ts -> test/support/helper.ts"]);
  // src/clone reaching into the KVM backend fires; the seam (backend.ts, select.ts) does not.
  expect(found("no-backend-internals-above-the-backend").sort()).toEqual([
    "src/cli/main.ts -> src/backend/kvm/machine.ts",
    "src/clone/pipeline.ts -> src/backend/kvm/machine.ts",
  ]);
  expect(status).not.toBe(0);
}, 60_000);

test("the project itself keeps the rules (what `bun run deps` checks in CI)", () => {
  const { status, violations } = cruise(ROOT, ["src", "bench", "demo", "bin"]);
  expect(violations).toEqual([]);
  expect(status).toBe(0);
}, 60_000);
