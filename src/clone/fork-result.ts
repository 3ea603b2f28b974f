/** What a clone round is and what it reports: types shared by the pipeline, the VMM's control protocol and the CLI. */
import type { CloneMemoryStats } from "../memory/clone-memory-stats.ts";

/**
 * How clones get memory: `cow` maps the frozen image copy-on-write (same host only); `ondemand`
 * starts empty and fetches each page on first touch from the parent's memory server.
 */
export type MemoryPath = "cow" | "ondemand";

/**
 * How clones on other hosts reach this host's memory: `tcp`, each its own connection to the
 * memory server (unicast only); `packet` or `udp`, mcdist multicast over raw Ethernet frames or
 * UDP, every page answered to the whole family.
 */
export type RemoteTransport = "tcp" | "packet" | "udp";

export interface CloneReport {
  name: string;
  /** The inventory host it runs on, for a family spread over a cluster. */
  host?: string;
  cloneId: number;
  pid: number;
  /** From the start of the clone processes to this clone's vCPUs running. */
  readyMs: number;
  /** Inside the clone's own process: from its start to the VM restored, and to its vCPUs running. */
  restoredMs: number;
  runningMs: number;
  /** Once the clone has ended: its exit status (or a CloneStatus), and what its memory cost (memory on demand). */
  exitStatus?: number;
  memory?: CloneMemoryStats;
}

export interface ForkResult {
  parent: string;
  memory: MemoryPath;
  /** How long the parent's vCPUs were stopped (capture + freeze). */
  pausedMs: number;
  /** Encoding and writing the descriptor, after the parent resumed. */
  descriptorMs: number;
  descriptorBytes: number;
  clones: CloneReport[];
  failed: Array<{ name: string; error: string }>;
  /** From the pause to the last clone running. */
  totalMs: number;
}
