/** Runs the snowflock CLI as a separate process (from source), as a user would. */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { within } from "./time.ts";

const ENTRY = join(import.meta.dir, "../../bin/snowflock.ts");

/** A private run directory so tests never see each other's (or the user's) VMs. */
export function testRunDir(): string {
  return mkdtempSync(join(tmpdir(), "snowflock-test-"));
}

export interface CliResult {
  status: number;
  stdout: string;
  stderr: string;
}

/** The CLI started and left running (a foreground `run`), for a test to signal. */
export function spawnSnowflock(args: string[], env: Record<string, string> = {}) {
  return Bun.spawn([process.execPath, ENTRY, ...args], {
    env: { ...process.env, ...env },
    stdout: "pipe",
    stderr: "pipe",
    stdin: "ignore",
  });
}

export async function snowflock(args: string[], env: Record<string, string> = {}, timeoutMs = 60_000): Promise<CliResult> {
  const child = Bun.spawn([process.execPath, ENTRY, ...args], {
    env: { ...process.env, ...env },
    stdout: "pipe",
    stderr: "pipe",
    stdin: "ignore",
    timeout: within(timeoutMs),
  });
  const [stdout, stderr, status] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
  return { status, stdout, stderr };
}
