/** What a clone round is and what it reports: types shared by the pipeline, the VMM's control protocol and the CLI. */
import type { BackendName, CopyFigures, OnDemandFigures } from "../backend/backend.ts";
import type { CloneMemoryStats } from "../memory/clone-memory-stats.ts";

/**
 * How clones get memory: `cow` maps the frozen image copy-on-write (same host only); `ondemand`
 * starts empty and fetches each page on first touch: on the parent's host from the frozen image
 * itself, on another from the parent's memory server.
 */
export type MemoryPath = "cow" | "ondemand";

/** How a fork gave its clones memory: a MemoryPath, or (Xen without paging) a full copy up front. */
export type ForkMemory = MemoryPath | "eager";

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
  /** The clone's VMM process (KVM) or its domain (Xen). */
  pid?: number;
  domid?: number;
  /** Served by a VMM process the host's pool had ready (pool/), not a process started for it. */
  fromPool?: boolean;
  /** Its own MAC address, where the backend gave it one. */
  mac?: string;
  /** From the start of the clone processes to this clone's vCPUs running. */
  readyMs: number;
  /** From its start to the VM restored, and to its vCPUs running (inside its own process on KVM). */
  restoredMs: number;
  runningMs: number;
  /** Once the clone has ended: its exit status (or a CloneStatus), and what its memory cost (memory on demand). */
  exitStatus?: number;
  memory?: CloneMemoryStats;
}

/** A fork that copied the parent's memory into each clone up front (Xen without paging). */
export interface EagerCopy extends CopyFigures {
  /** Building the clones' shells while the parent ran; suspending it; the copy; setting each clone's context and unpausing it. */
  shellsMs: number;
  suspendMs: number;
  copyMs: number;
  startMs: number;
}

/** A fork whose clones start with their memory paged out (Xen with paging): its figures and phases. */
export interface OnDemandFork extends OnDemandFigures {
  /** Suspending the parent; its state and frozen image; resuming it; each clone's context, eager frames and unpause. */
  suspendMs: number;
  captureMs: number;
  resumeMs: number;
  startMs: number;
}

/** What `snowflock fork --json` prints, on every backend. */
export interface ForkResult {
  backend: BackendName;
  parent: string;
  memory: ForkMemory;
  /** How long the parent was stopped (capture + freeze; on Xen: suspend, copy, resume). */
  pausedMs: number;
  /** Encoding and writing the descriptor, after the parent resumed (0 where there is none). */
  descriptorMs: number;
  descriptorBytes: number;
  clones: CloneReport[];
  failed: Array<{ name: string; error: string }>;
  /** From the pause to the last clone running. */
  totalMs: number;
  /** Where memory was copied up front: what it cost. */
  eagerCopy?: EagerCopy;
  /** Xen with memory on demand: the clones' paged-out shells and the parent's frozen image. */
  onDemand?: OnDemandFork;
  /** Xen: clones started from shells kept ready before the fork (`snowflock pool`). */
  shellsReady?: number;
  /** A family spread over hosts (Xen): how the other hosts fetched the memory, and what the server sent them. */
  transport?: RemoteTransport;
  memoryServer?: {
    pagesServed: number;
    bytesSent: number;
    /** Connections (tcp), or the hosts served (mcdist). */
    clients: number;
    /** mcdist: frames, and pages sent more than once (retransmissions). */
    framesSent?: number;
    pagesResent?: number;
  };
}
