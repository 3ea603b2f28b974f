/**
 * `__pool`: the host's pool daemon when no agent keeps the pool. It serves the keeper socket
 * (keeper-protocol.ts) until told to stop, or until its socket is gone from the run directory
 * (the directory was removed, or another keeper took over), and then ends every unclaimed process.
 */
import { existsSync, rmSync, statSync } from "node:fs";
import { serveLines } from "../net/line-server.ts";
import { log, printable } from "../output.ts";
import { runDir } from "../run-dir.ts";
import { scaledTimeout } from "../timeouts.ts";
import { DEFAULT_POOL_SETTINGS, PoolKeeper } from "./keeper.ts";
import { type PoolAnswer, parsePoolRequest } from "./keeper-protocol.ts";
import { poolPaths } from "./pool-files.ts";

const SOCKET_CHECK_MS = 2000;

/**
 * Serves `keeper` on the run directory's keeper socket; resolves when a stop request came or the
 * socket went. An agent's keeper (`stopEmpties`) outlives a stop request: it empties the pool
 * instead, so a later resize still reaches the agent, whose network namespace and cluster
 * interface its ready VMMs need, and no pool daemon starts beside it.
 */
export function serveKeeper(
  dir: string,
  keeper: PoolKeeper,
  options: { stopEmpties?: boolean } = {},
): { close(): void; done: Promise<void> } {
  const path = poolPaths(dir).keeperSocket;
  rmSync(path, { force: true });
  const done = Promise.withResolvers<void>();
  let watch: Timer | undefined;
  const server = serveLines(
    path,
    {
      maxConnections: 64,
      preAuthBytes: 0,
      authDeadlineMs: scaledTimeout(30_000),
      messageBytes: 4096,
      idleMs: scaledTimeout(30_000),
      maxOutboundBytes: 1 << 20,
    },
    (line): PoolAnswer => {
      const request = parsePoolRequest(line);
      if (request.op === "resize") keeper.resize(request.settings);
      else if (request.op === "stop" && options.stopEmpties) keeper.resize({ size: 0 });
      else if (request.op === "stop") setTimeout(close, 0);
      return { ok: true, pool: keeper.state() };
    },
  );
  const inode = statSync(path).ino;
  const close = () => {
    clearInterval(watch);
    keeper.stop();
    server.close();
    if (existsSync(path) && statSync(path).ino === inode) rmSync(path, { force: true });
    done.resolve();
  };
  watch = setInterval(() => {
    let ours = false;
    try {
      ours = statSync(path).ino === inode;
    } catch {}
    if (!ours) close();
  }, SOCKET_CHECK_MS);
  return { close, done: done.promise };
}

export async function runKeeperProcess(): Promise<number> {
  try {
    const dir = runDir();
    const keeper = new PoolKeeper(dir, { size: 0, ...DEFAULT_POOL_SETTINGS });
    const served = serveKeeper(dir, keeper);
    for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"] as const) process.on(signal, () => served.close());
    await served.done;
    return 0;
  } catch (error) {
    log.error(printable(`pool keeper: ${(error as Error).message}`));
    return 1;
  }
}
