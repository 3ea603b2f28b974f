/**
 * `snowflock pool`: the host's pool for forks. On KVM, VMM processes started ahead of any fork
 * (pool/), the same for every VM on the host; on Xen, clone shells built ahead for one domU
 * (the Xen backend keeps them: ready-shells.ts).
 */
import type { CAC } from "cac";
import type { PoolResult } from "../backend/backend.ts";
import { selectBackend } from "../backend/select.ts";
import { poolThroughAgent } from "../cluster/agent-socket.ts";
import { SnowflockError } from "../errors.ts";
import { log, printJson } from "../output.ts";
import { DEFAULT_POOL_SETTINGS, type PoolSettings, type PoolState } from "../pool/keeper.ts";
import { poolRequest } from "../pool/keeper-protocol.ts";
import { awaitPoolSettled, setPool } from "../pool/pool-daemon.ts";
import { ensureRunDir, runDir } from "../run-dir.ts";
import { formatSize, parseSize } from "../size.ts";

interface PoolOptions {
  clones?: number | string;
  memory?: string;
  maxIdleMemory?: string;
  refillAfter?: number | string;
  vcpus?: number | string;
  wait?: boolean;
  json?: boolean;
  backend?: string;
}

function printShells(pool: PoolResult): void {
  const ids = pool.shells.map((s) => s.cloneId);
  const built =
    pool.built === 0
      ? "none built"
      : `${pool.built} built in ${(pool.shellsMs / 1000).toFixed(2)} s` +
        (pool.pageOutMs > 0
          ? `, paged out (${pool.framesPagedOut} frames each) in ${(pool.pageOutMs / 1000).toFixed(2)} s, ` +
            `${((pool.pageOutMs * 1000) / (pool.framesPagedOut * pool.built)).toFixed(0)} µs a frame`
          : "");
  log.success(
    `${pool.parent}: ${pool.shells.length} ${pool.memory} shell(s) ready` +
      `${ids.length > 0 ? ` for clone IDs ${ids[0]}–${ids.at(-1)}` : ""} (${built}${pool.ended > 0 ? `; ${pool.ended} ended` : ""})`,
  );
}

/** One line on a host's pool of ready VMMs, for `pool` and `doctor`. */
export function describeVmmPool(state: PoolState | undefined): string {
  if (!state) return "no pool of ready VMMs (`snowflock pool --clones N` keeps one)";
  // An agent serves its keeper at size 0 too, for `snowflock pool` to resize.
  if (state.size === 0 && state.ready + state.starting === 0) return "no ready VMMs kept (`snowflock pool --clones N` keeps some)";
  return (
    `${state.ready} of ${state.size} ready VMM(s)${state.starting > 0 ? `, ${state.starting} starting` : ""}, ` +
    `${formatSize(state.idleBytes)} idle of ${formatSize(state.maxIdleBytes)} allowed; ` +
    `${state.served} served, ${state.died} died${state.lastError ? `; last failure: ${state.lastError}` : ""}`
  );
}

function wholeOption(value: number | string | undefined, name: string, min: number, max: number): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max)
    throw new SnowflockError("USAGE", `bad ${name} '${value}'`, `give a whole number from ${min} to ${max}`);
  return n;
}

/** The settings the options ask for; empty when they ask for none (a status request). */
function settingsFrom(options: PoolOptions): Partial<PoolSettings> {
  const settings: Partial<PoolSettings> = {};
  const size = wholeOption(options.clones, "--clones", 0, 256);
  if (size !== undefined) settings.size = size;
  if (options.maxIdleMemory !== undefined) {
    const bytes = parseSize(String(options.maxIdleMemory));
    if (bytes === undefined)
      throw new SnowflockError("USAGE", `bad --max-idle-memory '${options.maxIdleMemory}'`, "give a size like 512M or 2G");
    settings.maxIdleBytes = bytes;
  }
  const refill = wholeOption(options.refillAfter, "--refill-after", 0, 3_600_000);
  if (refill !== undefined) settings.refillAfterMs = refill;
  const vcpus = wholeOption(options.vcpus, "--vcpus", 1, 64);
  if (vcpus !== undefined) settings.vcpus = vcpus;
  return settings;
}

async function vmmPool(options: PoolOptions): Promise<void> {
  const settings = settingsFrom(options);
  const dir = ensureRunDir();
  let state: PoolState | undefined;
  if (Object.keys(settings).length === 0) state = await poolRequest(dir, { op: "status" });
  else {
    state = await setPool(dir, settings);
    let shown = -1;
    const progress = (s: PoolState) => {
      if (s.ready !== shown) log.info(`pool: ${(shown = s.ready)} of ${s.size} ready`);
    };
    if (state && options.wait !== false) state = await awaitPoolSettled(dir, options.json ? undefined : progress);
  }
  if (options.json) return printJson({ pool: state ?? null });
  if (settings.size === 0) log.success("pool ended: its ready VMMs are gone");
  else log.success(`pool: ${describeVmmPool(state)}`);
}

export function registerPool(cli: CAC): void {
  cli
    .command(
      "pool [domain]",
      "Keep clones' VMMs ready before the fork. KVM: N VMM processes for any VM on this host, so a fork of up to N " +
        "clones starts no process (no DOMAIN; without --clones, show the pool). Xen: N clone shells built for DOMAIN",
    )
    .option("--clones <n>", "VMMs (KVM) or shells (Xen) to keep ready; 0 ends the pool")
    .option(
      "--max-idle-memory <size>",
      `KVM: the most memory (PSS) the idle VMMs may hold together (default ${formatSize(DEFAULT_POOL_SETTINGS.maxIdleBytes)})`,
    )
    .option(
      "--refill-after <ms>",
      `KVM: quiet time after the last fork before the pool refills (default ${DEFAULT_POOL_SETTINGS.refillAfterMs})`,
    )
    .option("--vcpus <n>", `KVM: vCPU threads each ready VMM starts ahead (default ${DEFAULT_POOL_SETTINGS.vcpus})`)
    .option("--no-wait", "KVM: return at once instead of when the pool is filled")
    .option(
      "--memory <path>",
      "Xen: the fork path the shells are for: eager (the default) or ondemand (Xen with paging; through the agent)",
    )
    .option("--json", "Print the pool as JSON")
    .example(
      (bin) =>
        `  ${bin} pool --clones 32 && ${bin} fork web --clones 32      # KVM\n  ${bin} pool mydomu --clones 8 --memory ondemand    # Xen`,
    )
    .action(async (name: string | undefined, options: PoolOptions) => {
      const { domains } = await selectBackend(options.backend, "pool");
      if (!domains) {
        if (name !== undefined)
          throw new SnowflockError("USAGE", "on KVM the pool serves every VM on the host: give no VM name", "snowflock pool --clones N");
        return vmmPool(options);
      }
      if (name === undefined)
        throw new SnowflockError("USAGE", "on Xen a pool is built for one domU: name it", "snowflock pool DOMAIN --clones N");
      const clones = Number(options.clones);
      if (options.clones === undefined || !Number.isInteger(clones) || clones < 0 || clones > domains.maxClones)
        throw new SnowflockError("USAGE", `bad --clones '${options.clones ?? ""}'`, `give a whole number from 0 to ${domains.maxClones}`);
      const memory = options.memory ?? "eager";
      domains.checkMemory(memory);
      const pool =
        memory === "ondemand"
          ? await poolThroughAgent(runDir(), String(name), clones, "ondemand")
          : await domains.pool(String(name), clones, {
              memory: "eager",
              workDirectory: runDir(),
              progress: options.json ? undefined : (line) => log.info(line),
            });
      if (options.json) return printJson(pool);
      printShells(pool);
    });
}
