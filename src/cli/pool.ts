/** `snowflock pool DOMAIN --clones N`: keep clone shells ready for a Xen domU's forks (the Xen backend keeps them: ready-shells.ts). */
import type { CAC } from "cac";
import type { PoolResult } from "../backend/backend.ts";
import { selectBackend } from "../backend/select.ts";
import { poolThroughAgent } from "../cluster/agent-socket.ts";
import { SnowflockError } from "../errors.ts";
import { log, printJson } from "../output.ts";
import { runDir } from "../run-dir.ts";

interface PoolOptions {
  clones: number | string;
  memory?: string;
  json?: boolean;
  backend?: string;
}

function printPool(pool: PoolResult): void {
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

export function registerPool(cli: CAC): void {
  cli
    .command(
      "pool <domain>",
      "Keep N clone shells ready for a Xen domU's forks, built (and with --memory ondemand paged out) ahead of them: " +
        "a fork of up to N clones then only suspends the parent, sets the clones' context and unpauses them",
    )
    .option("--clones <n>", "Shells to keep ready (0 ends them)")
    .option("--memory <path>", "The fork path the shells are for: eager (the default) or ondemand (Xen with paging; through the agent)")
    .option("--json", "Print the shells ready as JSON")
    .example((bin) => `  ${bin} pool mydomu --clones 8 --memory ondemand && ${bin} fork mydomu --clones 8 --memory ondemand`)
    .action(async (name: string, options: PoolOptions) => {
      const { domains } = await selectBackend(options.backend, "pool");
      if (!domains) throw new SnowflockError("INTERNAL", "snowflock pool needs a backend of domains");
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
      printPool(pool);
    });
}
