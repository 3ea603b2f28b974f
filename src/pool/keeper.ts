/**
 * Keeps a host's pool of ready VMMs (ready-process.ts) at its size: starts them, learns from each
 * one's stdout when it is ready and when a fork claimed it, and refills once a burst of claims has
 * passed (`refillAfterMs`), so refills do not compete with the clones a fork is starting. A pooled
 * process that dies is replaced; the pool's idle memory (the ready processes' PSS) never stays
 * above `maxIdleBytes`: the newest are ended first. Used by the host's pool daemon and by agents.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { createInterface } from "node:readline";
import { SnowflockError } from "../errors.ts";
import { formatSize } from "../size.ts";
import { READY_VMM_VARIABLE } from "../jit-policy.ts";
import { CLONE_VMM_ENVIRONMENT, selfCommand } from "../vmm/self.ts";
import { processMemoryBytes } from "./idle-memory.ts";
import { CLAIMED_LINE, poolPaths, READY_LINE, removeReadySockets } from "./pool-files.ts";

export interface PoolSettings {
  /** Ready processes to keep. */
  size: number;
  /** The most memory (PSS) the idle ready processes may hold together. */
  maxIdleBytes: number;
  /** Quiet time after the last claim before the pool refills. */
  refillAfterMs: number;
  /** vCPU threads each ready process starts ahead. */
  vcpus: number;
  /** The cluster interface (an agent's pool): each ready process makes its mcdist packet socket and ring there ahead. */
  packetInterface?: string;
}

export const DEFAULT_POOL_SETTINGS: Omit<PoolSettings, "size"> = {
  maxIdleBytes: 1 << 30,
  refillAfterMs: 200,
  vcpus: 1,
};

/** Largest pool: a family's clones on one host and then some. */
export const MAX_POOL_SIZE = 256;

export interface PoolState extends PoolSettings {
  ready: number;
  starting: number;
  /** The ready processes' memory together (PSS), bytes. */
  idleBytes: number;
  /** Ready processes handed to forks, and ones that died while waiting, since the keeper started. */
  served: number;
  died: number;
  /** Nothing is starting and nothing will start until the pool changes: it is full, or held at its memory bound. */
  settled: boolean;
  /** Why the last ready process failed to start, if one did. */
  lastError?: string;
  pids: number[];
}

interface Member {
  pid: number;
  child: ChildProcess;
  ready: boolean;
  idleBytes: number;
}

/** Backoff after ready processes fail to start: no spinning on a broken host. */
const FAILURE_BACKOFF_MS = 2000;
/** When the keeper lets go of a claimed process's pipes: after the clone and its siblings started (ready-process.ts tidies at 2 s). */
const CLAIMED_PIPES_CLOSE_AFTER_MS = 5000;

export function checkPoolSettings(settings: PoolSettings): PoolSettings {
  const whole = (value: number, min: number, max: number) => Number.isInteger(value) && value >= min && value <= max;
  if (!whole(settings.size, 0, MAX_POOL_SIZE))
    throw new SnowflockError("USAGE", `bad pool size ${settings.size}`, `give a whole number from 0 to ${MAX_POOL_SIZE}`);
  if (!whole(settings.maxIdleBytes, 0, Number.MAX_SAFE_INTEGER)) throw new SnowflockError("USAGE", "bad pool idle memory limit");
  if (!whole(settings.refillAfterMs, 0, 3_600_000))
    throw new SnowflockError("USAGE", `bad refill delay ${settings.refillAfterMs} ms`, "give milliseconds from 0 to 3600000");
  if (!whole(settings.vcpus, 1, 64)) throw new SnowflockError("USAGE", `bad vCPU count ${settings.vcpus}`, "give 1 to 64");
  return settings;
}

export class PoolKeeper {
  private readonly members = new Map<number, Member>();
  private refillTimer: Timer | undefined;
  private served = 0;
  private died = 0;
  private failures = 0;
  private lastError: string | undefined;
  private stopped = false;
  /** The memory of the last ready process measured; until then the pool starts one process at a time. */
  private measuredBytes: number | undefined;
  /** Set when a single ready process is over the bound: no more start until the settings change. */
  private heldBack = false;

  constructor(
    private readonly dir: string,
    private settings: PoolSettings,
  ) {
    checkPoolSettings(settings);
    this.fill();
  }

  /** New settings: the pool grows at once, or shrinks by ending its newest idle processes. */
  resize(settings: Partial<PoolSettings>): void {
    this.settings = checkPoolSettings({ ...this.settings, ...settings });
    this.heldBack = false;
    this.lastError = undefined;
    this.trim();
    this.fill();
  }

  state(): PoolState {
    for (const member of this.members.values()) if (member.ready) member.idleBytes = processMemoryBytes(member.pid) ?? 0;
    this.trim();
    const members = [...this.members.values()];
    const starting = members.filter((m) => !m.ready).length;
    return {
      ...this.settings,
      ready: members.length - starting,
      starting,
      settled: starting === 0 && this.room() === 0,
      idleBytes: members.reduce((sum, m) => sum + m.idleBytes, 0),
      served: this.served,
      died: this.died,
      ...(this.lastError ? { lastError: this.lastError } : {}),
      pids: members.map((m) => m.pid),
    };
  }

  /** Ends every unclaimed process; claimed ones are clones and live on. */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.refillTimer);
    for (const member of [...this.members.values()]) this.end(member);
  }

  /** How many more processes may start now: up to the size, within the memory bound (one at a time until one was measured). */
  private room(): number {
    if (this.stopped || this.heldBack) return 0;
    const missing = Math.max(0, this.settings.size - this.members.size);
    if (this.measuredBytes === undefined) return this.members.size === 0 ? Math.min(missing, 1) : 0;
    const estimate = this.measuredBytes;
    const holding = [...this.members.values()].reduce((sum, m) => sum + (m.ready ? m.idleBytes : estimate), 0);
    return Math.min(missing, Math.max(0, Math.floor((this.settings.maxIdleBytes - holding) / Math.max(estimate, 1))));
  }

  private fill(): void {
    for (let n = this.room(); n > 0; n--) this.start();
  }

  /** Over the size or the memory bound: the newest idle processes go first. */
  private trim(): void {
    const newestFirst = [...this.members.values()].reverse();
    let idle = newestFirst.reduce((sum, m) => sum + m.idleBytes, 0);
    for (const member of newestFirst) {
      if (this.members.size <= this.settings.size && idle <= this.settings.maxIdleBytes) break;
      idle -= member.idleBytes;
      this.end(member);
      if (this.members.size === 0 && this.settings.size > 0) {
        this.heldBack = true;
        this.lastError = `one ready VMM holds ${formatSize(member.idleBytes)}, more than the ${formatSize(this.settings.maxIdleBytes)} allowed`;
      }
    }
  }

  private end(member: Member): void {
    this.members.delete(member.pid);
    member.child.kill("SIGKILL");
    removeReadySockets(this.dir, member.pid);
  }

  private scheduleRefill(delayMs: number): void {
    clearTimeout(this.refillTimer);
    this.refillTimer = setTimeout(() => this.fill(), delayMs);
  }

  private start(): void {
    const log = openSync(poolPaths(this.dir).log, "a", 0o600);
    let child: ChildProcess;
    try {
      child = spawn(selfCommand()[0]!, [...selfCommand().slice(1), "__ready"], {
        detached: true,
        stdio: ["pipe", "pipe", log],
        env: {
          ...process.env,
          ...CLONE_VMM_ENVIRONMENT,
          [READY_VMM_VARIABLE]: "1",
          SNOWFLOCK_RUN_DIR: this.dir,
          SNOWFLOCK_QUIET: "1",
          SNOWFLOCK_POOL_VCPUS: String(this.settings.vcpus),
          SNOWFLOCK_POOL_PACKET_INTERFACE: this.settings.packetInterface ?? "",
        },
      });
    } finally {
      closeSync(log);
    }
    const pid = child.pid;
    if (pid === undefined) {
      this.failed("the ready process could not be started");
      return;
    }
    const member: Member = { pid, child, ready: false, idleBytes: 0 };
    this.members.set(pid, member);
    child.stdin!.on("error", () => {});
    createInterface({ input: child.stdout! }).on("line", (line) => {
      if (line === READY_LINE && this.members.get(pid) === member) {
        member.ready = true;
        member.idleBytes = processMemoryBytes(pid) ?? 0;
        this.measuredBytes = member.idleBytes;
        this.failures = 0;
        this.trim();
        this.fill();
      } else if (line === CLAIMED_LINE && this.members.delete(pid)) {
        this.served++;
        // The clone's VMM outlives the keeper: nothing of it stays tied to this process. Its
        // pipes close later: an end of file on its stdin cost a starting clone ~0.8 ms of CPU.
        child.unref();
        setTimeout(() => {
          child.stdin!.destroy();
          child.stdout!.destroy();
        }, CLAIMED_PIPES_CLOSE_AFTER_MS).unref();
        this.scheduleRefill(this.settings.refillAfterMs);
      }
    });
    child.on("exit", (code, signal) => {
      if (this.members.get(pid) !== member) return;
      this.members.delete(pid);
      removeReadySockets(this.dir, pid);
      if (member.ready) {
        this.died++;
        this.scheduleRefill(this.settings.refillAfterMs);
      } else this.failed(`a ready process exited while starting (${signal ?? `status ${code}`}; see ${poolPaths(this.dir).log})`);
    });
  }

  private failed(why: string): void {
    this.lastError = why;
    this.failures++;
    this.scheduleRefill(FAILURE_BACKOFF_MS * Math.min(this.failures, 15));
  }
}
