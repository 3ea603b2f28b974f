/**
 * What the tests in test/xen share: describeXen (skip with one line without a Xen dom0, fail
 * when SNOWFLOCK_REQUIRE_XEN=1), running commands, reading a domU's console log, waiting.
 */
import { describe, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { CliResult } from "../../support/cli.ts";

const PRIVCMD = "/dev/xen/privcmd";
const REQUIRED = process.env.SNOWFLOCK_REQUIRE_XEN === "1";
export const ROOT = join(import.meta.dir, "../../..");
/** The compiled executable on Bun's baseline runtime (bun test/xen/build-baseline.ts). */
export const BINARY = join(ROOT, "dist/snowflock-baseline");
export const DOMU_DIR = process.env.SNOWFLOCK_XEN_DOMU_DIR ?? "/usr/local/share/snowflock-xen/domu";

/** describe() for tests that need a Xen dom0: skips with one line elsewhere, fails if required. */
export function describeXen(name: string, body: () => void): void {
  if (existsSync(PRIVCMD)) return describe(name, body);
  const reason = `no Xen dom0 here (${PRIVCMD} is missing)`;
  if (REQUIRED) {
    return describe(name, () => {
      test("Xen is available (SNOWFLOCK_REQUIRE_XEN=1)", () => {
        throw new Error(`Xen is required here but unavailable: ${reason}; run it with bun run test:xen`);
      });
    });
  }
  console.warn(`skipping "${name}": ${reason} (bun run test:xen runs it in a nested Xen host)`);
  describe.skip(name, body);
}

export async function run(command: string[], timeoutMs = 120_000): Promise<CliResult> {
  const child = Bun.spawn(command, { cwd: ROOT, stdin: "ignore", stdout: "pipe", stderr: "pipe", timeout: timeoutMs });
  const [stdout, stderr, status] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
  return { status, stdout, stderr };
}

export function consoleLogPath(domain: string): string {
  return `/var/log/xen/console/guest-${domain}.log`;
}

/** What a domU has printed on its console so far ("" before xenconsoled opened its log). */
export function consoleText(domain: string): string {
  try {
    return readFileSync(consoleLogPath(domain), "utf8");
  } catch {
    return "";
  }
}

/**
 * Whether a domU's console has a whole line (its newline written too) containing `text`: a line
 * still being written may be cut short, and a wait that ends on its start read half a join line.
 */
export function consoleHasLine(domain: string, text: string): boolean {
  return consoleText(domain)
    .split("\n")
    .slice(0, -1)
    .some((line) => line.includes(text));
}

/**
 * Polls `ready()` until it holds. With `alive`, it fails at once, with the diagnosis, when one of
 * those domains has shut down or crashed: a dead guest never gets ready, and the run should not
 * sit out the whole timeout to say so.
 */
export async function waitFor(what: string, ready: () => boolean, timeoutMs: number, alive: string[] = []): Promise<number> {
  const started = performance.now();
  let checked = started;
  while (!ready()) {
    if (performance.now() - started > timeoutMs) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    if (alive.length > 0 && performance.now() - checked > 2000) {
      checked = performance.now();
      for (const domain of alive) {
        // Ready just before it shut down (a clone that prints, then exits) is still ready.
        if ((await ended(domain)) && !ready())
          throw new Error(`domU ${domain} shut down or crashed while waiting for ${what}\n${await diagnosis(alive)}`);
      }
    }
    await Bun.sleep(250);
  }
  return Math.round(performance.now() - started);
}

export const tail = (text: string, lines: number) => text.trimEnd().split("\n").slice(-lines).join("\n");

/** xl list, the hypervisor's last lines and the named consoles: for a failure message. */
export async function diagnosis(domains: string[]): Promise<string> {
  const list = await run(["xl", "list"]);
  const dmesg = await run(["xl", "dmesg"]);
  const consoles = domains.map((d) => `${consoleLogPath(d)} (last lines):\n${tail(consoleText(d), 15) || "(none)"}`).join("\n");
  return `xl list:\n${list.stdout}\nxl dmesg (last lines):\n${tail(dmesg.stdout, 15)}\n${consoles}`;
}

/**
 * Whether xl shows the domain ended: crashed, or shut down for any reason but a suspend (a fork
 * suspends its parent for a moment; a triple fault shows as a reboot). `xl list -v` gives the
 * state column and, after the UUID, the shutdown reason code (2: suspend).
 */
async function ended(name: string): Promise<boolean> {
  const line = (await run(["xl", "list", "-v", name])).stdout.split("\n").find((l) => l.startsWith(`${name} `));
  const [, , , , state = "", , , reason = ""] = line?.trim().split(/\s+/) ?? [];
  return state.includes("c") || (state.includes("s") && reason !== "2");
}

/**
 * xl create, then wait until `ready()`. The stock domU kernel now and then died while booting
 * under this emulation (a triple fault at an RDTSC in TSC calibration, before pvh.cfg said
 * tsc_mode = "native"; once too after its ACPI lines); such a domain is started again, at most
 * twice, with a line saying so and the end of its console. Any other failure throws.
 */
export async function bootDomU(name: string, createArgs: string[], ready: () => boolean, timeoutMs: number): Promise<number> {
  for (let attempt = 1; ; attempt++) {
    await run(["xl", "destroy", name]);
    const created = await run(["xl", "create", ...createArgs, `name="${name}"`]);
    if (created.status !== 0) throw new Error(`xl create ${name} failed: ${created.stderr}`);
    const started = performance.now();
    let crashed = false;
    while (!ready()) {
      if (performance.now() - started > timeoutMs)
        throw new Error(`timed out after ${timeoutMs / 1000} s waiting for domU ${name}\n${await diagnosis([name])}`);
      if (await ended(name)) {
        crashed = true;
        break;
      }
      await Bun.sleep(500);
    }
    if (!crashed) return Math.round(performance.now() - started);
    const state = await diagnosis([name]);
    if (attempt >= 3) throw new Error(`domU ${name} shut down before it was ready, ${attempt} times\n${state}`);
    console.warn(`domU ${name} died while booting (attempt ${attempt}); starting it again. ${tail(state, 6)}`);
  }
}
