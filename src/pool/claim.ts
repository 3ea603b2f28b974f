/**
 * A fork's side of the pool: claim one ready VMM (renaming its socket is the claim, so two forks
 * never get the same process) and hand it the clone's launch record as one line. A stale socket
 * (its process gone) is removed and the next one tried; with none left the caller starts a process.
 */
import { renameSync, rmSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { encodeLaunchRecord, type LaunchRecord } from "../clone/launch-record.ts";
import type { StartTimes } from "../vmm/launch-clock.ts";
import { RUNNING_PREFIX, readyPids, readySocket, takenSocket } from "./pool-files.ts";

export interface HandedOver {
  pid: number;
  /** Why it failed, once it has said so or ended before its clone ran; else undefined. */
  failure(): string | undefined;
  /** Resolves with the clone's timings once it says it runs (never, if it fails first). */
  running: Promise<StartTimes>;
  /** Lets go of the connection once the clone runs. */
  release(): void;
}

/** The timings in a `running` line, or undefined for a line that is not one (or is malformed). */
function runningTimes(line: string): StartTimes | undefined {
  if (!line.startsWith(RUNNING_PREFIX)) return undefined;
  try {
    const { builtMs, runningMs } = JSON.parse(line.slice(RUNNING_PREFIX.length)) as Partial<StartTimes>;
    return typeof builtMs === "number" && typeof runningMs === "number" ? { builtMs, runningMs } : undefined;
  } catch {
    return undefined;
  }
}

function connectUnix(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    socket.once("connect", () => resolve(socket));
    socket.once("error", reject);
  });
}

/** Hands `record` to a ready VMM in `dir`; undefined when the pool there has none. */
export async function handToReadyVmm(record: LaunchRecord, dir: string): Promise<HandedOver | undefined> {
  for (const pid of readyPids(dir)) {
    const taken = takenSocket(dir, pid);
    try {
      renameSync(readySocket(dir, pid), taken);
    } catch {
      continue; // another fork took it first
    }
    let socket: Socket;
    try {
      socket = await connectUnix(taken);
    } catch {
      rmSync(taken, { force: true });
      continue;
    }
    let said = "";
    let closed = false;
    let ran = false;
    const { promise: running, resolve } = Promise.withResolvers<StartTimes>();
    socket.on("data", (chunk: Buffer) => {
      said = `${said}${chunk.toString("utf8")}`.slice(-4096);
      const times = said.endsWith("\n") ? runningTimes(said.trim().split("\n").pop()!) : undefined;
      if (times) {
        ran = true;
        resolve(times);
      }
    });
    socket.on("error", () => {});
    socket.on("close", () => (closed = true));
    socket.write(Buffer.concat([Buffer.from(encodeLaunchRecord(record)), Buffer.from("\n")]));
    return {
      pid,
      failure: () =>
        ran ? undefined : said.trim() ? said.trim().split("\n").pop() : closed ? "its process ended before the clone ran" : undefined,
      running,
      release: () => socket.destroy(),
    };
  }
  return undefined;
}
