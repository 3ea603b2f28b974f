/**
 * The demo (`bun run demo` runs it here, or in the nested KVM host: demo/run.ts): snowflock's
 * main job on a host with /dev/kvm, through the CLI a user would type, each command shown.
 *
 *  1. boot a guest (`run hello`);
 *  2. where test hosts can be made (root, `ip netns`): two of them (`cluster up --hosts 2`);
 *  3. a guest builds a dataset and calls sf_clone: CLONES clones, each hashing its slice, with
 *     memory on demand (clones on the second host take pages by mcdist multicast), the VM
 *     descriptor sent to each, and the avoidance heuristics sparing pages: each clone's answer is
 *     checked against the host's own and shown in a table per clone;
 *  4. an operator fork of a running VM (`run serve --detach`, `fork --clones 2`), `ls` showing
 *     the family, and `kill`.
 *
 * Everything runs in a private run directory and test-host prefix, removed at the end (or on a
 * signal). Exit status 0 only if every clone's answer matched the host's and every step worked.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { sliceLines } from "../src/guest/dataset.ts";
import { parseSize } from "../src/size.ts";
import { scaledTimeout } from "../src/timeouts.ts";
import type { VmResult } from "../src/vmm/vmm.ts";
import type { ForkResult } from "../src/clone/fork-result.ts";
import { printTable } from "../src/output.ts";
import {
  cli,
  CLI_TIMEOUT_MS,
  clusterDown,
  clusterUp,
  lastLine,
  openSession,
  ownPrefix,
  RUN_TIMEOUT_MS,
  type Session,
} from "../src/bench/session.ts";
import { cloneRows, cloneTable } from "./clone-table.ts";

const ROOT = join(import.meta.dir, "..");
const CLONES = 4;
const SEED = 42;
const SIZE = process.env.SNOWFLOCK_DEMO_SIZE ?? "8M";
const TRANSPORT = "packet";
const started = performance.now();
let failures = 0;

const elapsed = () => `${((performance.now() - started) / 1000).toFixed(1)} s`;
const say = (text: string) => console.log(text);
function step(title: string): void {
  say(`\n== ${title}  [${elapsed()}]`);
}
function fail(text: string): void {
  failures++;
  say(`FAILED: ${text}`);
}

/** Runs `snowflock ARGS` as shown; a non-zero status is a failure of the demo. */
async function snowflock(
  session: Session,
  args: string[],
  timeoutMs = CLI_TIMEOUT_MS,
): Promise<{ ok: boolean; stdout: string; stderr: string }> {
  say(`$ snowflock ${args.join(" ")}`);
  const r = await cli(session, args, timeoutMs);
  if (r.status !== 0) fail(`snowflock ${args[0]} exited with status ${r.status}: ${lastLine(r.stderr) || lastLine(r.stdout)}`);
  return { ok: r.status === 0, stdout: r.stdout, stderr: r.stderr };
}

function parsed<T>(stdout: string): T | undefined {
  try {
    return JSON.parse(stdout) as T;
  } catch {
    fail(`not JSON: ${lastLine(stdout)}`);
    return undefined;
  }
}

/** Test hosts need root and a working `ip netns`; without them the clones stay on this host. */
function testHostsPossible(): { ok: true } | { ok: false; reason: string } {
  if (process.getuid?.() !== 0) return { ok: false, reason: "test hosts (network namespaces) need root" };
  const r = Bun.spawnSync(["ip", "netns", "list"], { stdout: "ignore", stderr: "pipe" });
  return r.exitCode === 0 ? { ok: true } : { ok: false, reason: `\`ip netns\` does not work here: ${r.stderr.toString().trim()}` };
}

async function bootGuest(session: Session): Promise<void> {
  step("1. boot a guest");
  const r = await snowflock(session, ["run", "hello", "--json"]);
  const result = r.ok ? parsed<VmResult>(r.stdout) : undefined;
  if (!result) return;
  for (const line of result.console) say(`  guest: ${line}`);
  say(
    `  booted and ran in ${result.timings.endMs.toFixed(0)} ms (first console line at ` +
      `${result.timings.firstConsoleLineMs?.toFixed(0) ?? "-"} ms)`,
  );
}

async function cloneAndCheck(session: Session, cluster: boolean): Promise<void> {
  step(
    `3. sf_clone: a guest forks into ${CLONES} clones${cluster ? ` over 2 hosts (mcdist ${TRANSPORT} multicast)` : ""}, memory on demand`,
  );
  const size = parseSize(SIZE);
  if (size === undefined) return fail(`SNOWFLOCK_DEMO_SIZE='${SIZE}' is not a size (give e.g. 8M)`);
  const expected = sliceLines(BigInt(SEED), size, CLONES);
  const args = ["run", "sha256-par", `size=${SIZE}`, `seed=${SEED}`, `clones=${CLONES}`, "--mem", "64M", "--memory", "ondemand", "--json"];
  if (cluster) args.push("--cluster", session.inventory, "--transport", TRANSPORT);
  const r = await snowflock(session, args, RUN_TIMEOUT_MS);
  const result = r.stdout ? parsed<VmResult>(r.stdout) : undefined;
  if (!result) return;
  const round = result.forks[0];
  if (!round) return fail("the guest made no clones");
  const rows = cloneRows(result, expected, { parentHost: cluster ? "h1" : undefined, transport: TRANSPORT });
  const { header, cells } = cloneTable(rows);
  printTable(header, cells);
  say("  FETCHED: pages the clone asked for; MULTICAST: pages that reached it unasked, sent for a sibling;");
  say(
    "  AVOIDED: pages it never fetched, spared by known-zero / free-pages / allocation-hints; RUNNING: " +
      "from the clones' start to its vCPUs running",
  );
  if (cluster) {
    // A send for one clone reaches its siblings on that host: put in unasked (MULTICAST), answering
    // a sibling's own ask for that page at once (collapsed at the server), or dropped unread by a
    // sibling too busy for pages it did not ask for (shed) — which one is a matter of timing.
    const { pagesMulticast, serverRequestsCollapsed, framesShed } = result.stats;
    say(
      `  mcdist sends that reached siblings: ${pagesMulticast} pages put in unasked, ${serverRequestsCollapsed} ` +
        `asks answered by a sibling's send, ${framesShed} frames shed by a clone behind`,
    );
  }
  const matched = rows.filter((row) => row.matched).length;
  say(
    `  parent paused ${round.pausedMs.toFixed(1)} ms; VM descriptor ${round.descriptorBytes} bytes; all ` +
      `${round.clones.length} clones running ${round.totalMs.toFixed(0)} ms after the pause; ` +
      `parent's memory server sent ${(result.stats.serverBytesSent / 1048576).toFixed(1)} MiB`,
  );
  say(`  ${matched}/${CLONES} clones' SHA-256 equal the host's (${SIZE} dataset, seed ${SEED})`);
  if (matched !== CLONES || rows.length !== CLONES) fail(`${CLONES - matched} clone(s) did not print the host's answer`);
  for (const f of round.failed) fail(`${f.name}: ${f.error}`);
}

async function operatorFork(session: Session): Promise<void> {
  step("4. fork a running VM from outside: snowflock fork");
  const name = "demo-web";
  await snowflock(session, ["run", "serve", "--name", name, "--detach"]);
  const fork = await snowflock(session, ["fork", name, "--clones", "2", "--json"]);
  const result = fork.ok ? parsed<ForkResult>(fork.stdout) : undefined;
  if (result)
    say(
      `  ${result.clones.length} clones running ${result.totalMs.toFixed(0)} ms after the pause (parent ` +
        `paused ${result.pausedMs.toFixed(1)} ms)`,
    );
  const ls = await snowflock(session, ["ls"]);
  say(ls.stdout.trimEnd().replace(/^/gm, "  "));
  for (const vm of [name, `${name}.1`, `${name}.2`]) if (!ls.stdout.includes(vm)) fail(`ls does not show ${vm}`);
  // The clone carries on from the parent's instant, as clone 1: its ticks say so.
  const tick = await cloneTick(session, `${name}.1`);
  if (tick) say(`  ${name}.1 carries on: "${tick}"`);
  else fail(`${name}.1 printed no tick as clone 1`);
  await snowflock(session, ["kill", name]);
}

/** The newest `tick K id 1` line of a clone's console (`snowflock logs`), waiting a little for one. */
async function cloneTick(session: Session, clone: string): Promise<string | undefined> {
  say(`$ snowflock logs ${clone}`);
  for (const deadline = performance.now() + scaledTimeout(5000); performance.now() < deadline; await Bun.sleep(500)) {
    const r = await cli(session, ["logs", clone], CLI_TIMEOUT_MS);
    const ticks = r.stdout.split("\n").filter((line) => / id 1$/.test(line));
    if (ticks.length > 0) return ticks.at(-1);
  }
  return undefined;
}

async function main(): Promise<number> {
  const binary = join(ROOT, "dist/snowflock");
  const hosts = testHostsPossible();
  const session = openSession("demo", hosts.ok ? await ownPrefix("d") : "sfd");
  if (existsSync(binary)) session.command = [binary];
  try {
    say(`snowflock demo: ${session.command ? binary : "bin/snowflock.ts (from source; `bun run build` makes dist/snowflock)"}`);
    await bootGuest(session);
    step("2. test hosts for clones on other hosts");
    let clustered = false;
    if (hosts.ok) {
      say(`$ snowflock cluster up --hosts 2 --prefix ${session.prefix}`);
      clustered = await clusterUp(session, 2, 16).then(
        () => true,
        (error: Error) => (fail(error.message), false),
      );
    } else say(`  skipped: ${hosts.reason}; every clone runs on this host`);
    await cloneAndCheck(session, clustered);
    if (session.clusterUp) {
      say(`$ snowflock cluster down --prefix ${session.prefix}`);
      await clusterDown(session);
    }
    await operatorFork(session);
  } catch (error) {
    fail((error as Error).message);
  } finally {
    session.close();
  }
  say(
    failures === 0
      ? `\ndemo done in ${elapsed()}: every clone's answer matched the host's`
      : `\ndemo FAILED (${failures} problem(s)) after ${elapsed()}`,
  );
  return failures === 0 ? 0 : 1;
}

process.exit(await main());
