/**
 * A fork's side of the pool: claim one ready VMM (renaming its socket is the claim, so two forks
 * never get the same process) and hand it the clone's launch record as one line. A stale socket
 * (its process gone) is removed and the next one tried; with none left the caller starts a process.
 */
import { renameSync, rmSync } from "node:fs";
import { encodeLaunchRecord, type LaunchRecord } from "../clone/launch-record.ts";
import { runningTimes, type StartTimes } from "../vmm/launch-clock.ts";
import { readyPids, readySocket, takenSocket } from "./pool-files.ts";

export interface HandedOver {
  pid: number;
  /** Why it failed, once it has said so or ended before its clone ran; else undefined. */
  failure(): string | undefined;
  /** Resolves with the clone's timings once it says it runs (never, if it fails first). */
  running: Promise<StartTimes>;
  /** Lets go of the connection once the clone runs. */
  release(): void;
}

/** The last line of what a claimed process said ("" for nothing). */
function lastLine(said: string): string {
  return said.trim().split("\n").pop()!;
}

/**
 * Ready pids not yet tried by this process, per run directory. A fork's clones share it, so each
 * tries its own process: listing the directory per clone had all N clones rename the same sockets
 * in turn, N²/2 failed renames in a burst.
 */
const untried = new Map<string, number[]>();

/** The next ready pid to try in `dir`: from the list this process holds, listing `dir` again once per call when that runs out. */
function* candidates(dir: string): Generator<number> {
  let listed = false;
  for (;;) {
    let queue = untried.get(dir);
    if (!queue?.length) {
      if (listed) return;
      listed = true;
      queue = readyPids(dir);
      untried.set(dir, queue);
    }
    const pid = queue.shift();
    if (pid !== undefined) yield pid;
  }
}

/** Hands `record` to a ready VMM in `dir`; undefined when the pool there has none. */
export async function handToReadyVmm(record: LaunchRecord, dir: string): Promise<HandedOver | undefined> {
  for (const pid of candidates(dir)) {
    const taken = takenSocket(dir, pid);
    try {
      renameSync(readySocket(dir, pid), taken);
    } catch {
      continue; // another fork took it first
    }
    let unsent = Buffer.concat([Buffer.from(encodeLaunchRecord(record)), Buffer.from("\n")]);
    let said = "";
    let closed = false;
    let ran = false;
    const { promise: running, resolve } = Promise.withResolvers<StartTimes>();
    const send = (socket: Bun.Socket<undefined>) => {
      if (unsent.length > 0) unsent = unsent.subarray(Math.max(0, socket.write(unsent)));
    };
    let socket: Bun.Socket<undefined>;
    try {
      // Bun's own socket, not node:net: a fork starts N of these at once, and each node Socket costs ~1 ms.
      socket = await Bun.connect<undefined>({
        unix: taken,
        socket: {
          data(_, chunk) {
            said = `${said}${chunk.toString("utf8")}`.slice(-4096);
            const times = said.endsWith("\n") ? runningTimes(lastLine(said)) : undefined;
            if (times) {
              ran = true;
              resolve(times);
            }
          },
          drain: send,
          close: () => void (closed = true),
          error() {},
        },
      });
    } catch {
      rmSync(taken, { force: true });
      continue;
    }
    send(socket);
    return {
      pid,
      failure: () => (ran ? undefined : lastLine(said) || (closed ? "its process ended before the clone ran" : undefined)),
      running,
      release: () => socket.terminate(),
    };
  }
  return undefined;
}
