/**
 * The seam between snowflock's clone pipeline and a hypervisor: what every backend offers
 * (`Backend`) and what a running VM looks like to the layers above (`Machine`). Nothing above
 * src/backend imports a backend's own files; select.ts hands commands the one they asked for.
 */
import type { NetAttachment } from "../net/tap.ts";
import type { DiskAttachment } from "../disk/image.ts";
import type { AllocationHints } from "../guest-memory/allocation-hints.ts";
import type { FaultStats } from "../memory/fault-counters.ts";
import type { GuestMemory } from "../guest-memory/guest-memory.ts";
import type { SnowflockError } from "../errors.ts";
import type { BackendName } from "./names.ts";

export { BACKENDS, type BackendName } from "./names.ts";

/** Most vCPUs a VM may have (`run --vcpus`); a descriptor with more is refused. */
export const MAX_VCPUS = 64;

/** Where the guest's page allocator keeps its bitmap (SF_HC_FREE_PAGES). */
export interface FreePageMap {
  /** Guest-physical address of the bitmap; bit i set = page frame i in use. */
  address: number;
  frames: number;
}

/** A guest's Impromptu Cluster API call (sf_clone, sf_join, ...) as the family serves it. */
export interface GuestCall {
  vcpu: number;
  nr: number;
  args: bigint[];
  /** Guest-physical address of the call block (where a clone's sf_clone result goes). */
  blockAddress: number;
}

export type MachineEnd =
  /** `result`: what a clone handed its parent's join (sf exit STATUS RESULT). */
  { kind: "exit"; status: number; result?: string } | { kind: "crash"; reason: string; vcpu: number; rip?: string } | { kind: "stopped" };

/** A machine's captured state apart from its memory: opaque above the backend, tagged with it. */
export interface BackendState {
  backend: BackendName;
  memorySize: number;
}

/** What `inspect` shows of each vCPU. */
export interface VcpuSummary {
  index: number;
  rip: string;
  rsp: string;
  /** KVM's: the vCPU's run state and how many MSRs were saved. */
  mpState?: number;
  msrs?: number;
}

export interface StateDecoder {
  /** One section of the backend's (type in sectionTypes), checked as it is read. */
  take(type: number, body: Uint8Array): void;
  /** The state, once every section was taken; refuses a state with a part missing. */
  finish(): BackendState;
}

export interface StatePersist {
  /** Descriptor section types this backend's state uses (2 and 3 KVM's, 16 and up Xen's; never 1 or 4 to 15: the descriptor's own). */
  sectionTypes: ReadonlySet<number>;
  /** The most bytes its sections (headers included) may take. */
  maxBytes: number;
  /** The state as descriptor sections. */
  encode(state: BackendState): Uint8Array;
  decoder(memorySize: number): StateDecoder;
  summary(state: BackendState): VcpuSummary[];
}

/** A paused machine, captured: its state and the backing pages a clone touches first (page tables, code and stack under each vCPU). */
export interface CapturedMachine {
  state: BackendState;
  eagerPages: number[];
  /** With `freezeDisks`: the frozen copies of writable disks the state names; the caller closes them once no clone will open them. */
  frozenDisks: number[];
}

export interface CaptureOptions {
  /** Freeze each writable disk for clones (disk/clone-disks.ts); without it a writable disk refuses the capture. */
  freezeDisks?: boolean;
}

export interface MachineOptions {
  vcpus: number;
  /** 0 for an original VM; a clone's ID otherwise. */
  cloneId?: number;
  onConsole?: (line: string, vcpu: number) => void;
  /** The console line so far, where the guest stopped printing to wait (a shell's prompt); onConsole gets the whole line later. */
  onConsolePartial?: (text: string) => void;
  /** Serves the Impromptu Cluster API; the calling vCPU waits for the result. */
  onGuestCall?: (call: GuestCall) => Promise<bigint>;
  /** Called once the vCPUs have stopped, before the VM is closed (memtap releases its uffd). */
  beforeClose?: () => void;
  /**
   * Awaited after beforeClose, before the VM is closed: a clone tells its parent how it ended here,
   * not after the teardown (closing a VM and its memory takes 10-25 ms). It must not throw.
   */
  afterStop?: (end: MachineEnd) => Promise<void>;
  /** Where the vCPUs mark pages the guest's allocator hands out (memtap zero-fills them). */
  allocationHints?: AllocationHints;
  /** Disk images the guest gets as virtio block devices (a Linux guest booted with ACPI finds them). */
  disks?: DiskAttachment[];
  /** A virtio network device on a tap of this bridge (a Linux guest booted with ACPI finds it). */
  net?: NetAttachment;
  /** A device stopped serving what the guest broke (the VM goes on). */
  onDeviceError?: (message: string) => void;
  /** Where a clone's disk overlays go, and frozen disks when the image's own directory cannot hold them (the run directory). */
  scratchDirectory?: string;
}

/** A VM this process runs: the clone pipeline pauses it, captures it and resumes it. */
export interface Machine {
  readonly memory: GuestMemory;
  /** Settles once the machine has stopped, with why. */
  readonly ended: Promise<MachineEnd>;
  /** Where the guest's allocator keeps its bitmap, if it said; clones inherit it. */
  freePageMap: FreePageMap | undefined;
  start(): Promise<void>;
  /** Ends the machine from outside; resolves with how it ended. */
  stop(): Promise<MachineEnd>;
  pause(): void;
  resume(): void;
  /** The machine's state (it must be paused). */
  capture(options?: CaptureOptions): CapturedMachine;
  /** Guest pages written so far (or, once ended, by the end). */
  pagesTouched(): number;
  /** Bytes typed at the guest's console; returns how many it took (its input buffer may be full). */
  consoleInput(bytes: Uint8Array): number;
}

/** Machines run by snowflock's own VMM processes (KVM). */
export interface MachineFactory {
  /**
   * A machine with the kernel `image` loaded at its entry (a PVH ELF, or a Linux bzImage with its
   * `initrd`); start() runs it.
   */
  boot(image: Uint8Array, memoryBytes: number, cmdline: string, options: MachineOptions, initrd?: Uint8Array): Machine;
  /** A fresh machine that carries on from `state` over `memory` (which it takes ownership of). */
  restore(state: BackendState, memory: GuestMemory, options: Omit<MachineOptions, "vcpus">): Machine;
  /**
   * In a VMM started ahead of its machine (a ready VMM of the pool): run a throwaway machine of
   * `vcpus` vCPUs through restore, start and its end, so the machine's code is compiled, keep its
   * vCPU threads, and make the VM now.
   */
  prestart(vcpus: number): Promise<void>;
  /** A state with every register zeroed, for warming up the descriptor's code in such a VMM (nothing runs from it). */
  blankState(memorySize: number, vcpus: number): BackendState;
}

/** A VM the hypervisor runs and snowflock attaches to by name (Xen domUs), as `ls` shows it. */
export interface DomainListing {
  name: string;
  id: number;
  state: string;
  memoryBytes: number;
  vcpus: number;
  cloneId: number;
  /** The family's parent (its id); its own for a domain no fork touched. */
  family: number;
  /** For a clone whose parent runs on another host (a clone order): that inventory host; `family` is the parent's id there. */
  parentHost?: string;
  mac?: string;
  /** A clone whose memory a pager serves (it cannot run without the agent that forked it). */
  onDemand?: boolean;
  /** A shell kept ready for a fork of its family: paused, never run (state "ready shell"). */
  readyShell?: boolean;
  /** 0 for a parent; one more per generation of clones (for the tree in `ls`). */
  depth: number;
}

/** A guest's request to its host through the hypervisor (Xen: what the sf tool writes into XenStore). */
export interface GuestRequest {
  domain: number;
  verb: string;
  /** The request's sequence number, which its answer repeats. */
  seq: string;
  args: string[];
}

/**
 * The phases of one round of clones from one parent, as a backend carries them out.
 * src/clone/pipeline.ts runs them in this order, times each, resumes the parent if capture fails
 * and abandons the round on any failure (then releases a whole CloneRound).
 */
export interface CaptureRound<Source> {
  /** While the parent still runs: what the clones need before it stops (Xen: their domain shells). */
  prepare(): Promise<void>;
  /** Stops the parent (KVM: its vCPUs; Xen: the guest suspends itself). */
  pause(): Promise<void>;
  /** With the parent stopped: its state and memory as the clones will start from them. */
  capture(): Promise<void>;
  resume(): Promise<void>;
  /** With the parent running again: what clones start from, where they reach it (KVM: the descriptor file, memory servers). */
  distribute(): Promise<Source>;
  /** After a failure in any phase, with the parent running: undoes what the round made (clones not yet running). */
  abandon(): Promise<void>;
}

/** A round that also starts its clones from the source it distributed. */
export interface CloneRound<Source, Started> extends CaptureRound<Source> {
  restore(source: Source): Promise<Started>;
  /** Lets go of what the round held while it ran (threads, handles), after success or failure. */
  release(): Promise<void>;
}

/** A clone the hypervisor runs as a domain of its own. */
export interface StartedDomain {
  name: string;
  cloneId: number;
  domid: number;
  mac: string;
}

/** What a round of domains started, and where the parent's memory was copied into each clone up front, what that cost. */
export interface DomainRoundResult {
  backend: BackendName;
  parent: string;
  clones: StartedDomain[];
  copy?: CopyFigures;
  onDemand?: OnDemandFigures;
  /** Clones started from shells kept ready before the fork (`snowflock pool`); 0 when the round built its own. */
  shellsReady: number;
}

/** A domain read for its descriptor (src/clone/describe.ts makes one of it). */
export interface DomainSnapshot {
  name: string;
  cmdline: string;
  state: BackendState;
  /** One bit per page (frame i = backing page i): set where the page holds data. */
  nonZeroPages: Uint8Array;
  /** The pages a clone needs before it runs, by frame. */
  pages: Map<number, Uint8Array>;
  /** How long the domain stood still while it was read. */
  pausedMs: number;
}

/** What `snowflock pool` did: the shells ready for the parent's forks now. */
export interface PoolResult {
  parent: string;
  memory: "eager" | "ondemand";
  /** The shells ready now, by clone ID. */
  shells: Array<{ name: string; domid: number; cloneId: number }>;
  /** Of those, built by this call; and shells it ended (over the count, or of the other memory path). */
  built: number;
  ended: number;
  /** Building the new shells, and (on demand) paging them out, side by side. */
  shellsMs: number;
  pageOutMs: number;
  /** Frames each new shell had paged out (on demand; 0 for eager). */
  framesPagedOut: number;
}

/** A round whose clones take their memory on demand from pagers (Xen with paging). */
export interface OnDemandFigures {
  /** Frames each clone's shell had paged out before the fork, and how long that took (the shells side by side). */
  pagesPagedOut: number;
  pageOutMs: number;
  /** The parent's frozen image: its frames, and of them zero ones (never fetched). */
  imagePages: number;
  zeroPages: number;
  /** Frames each clone got before it ran: page tables, the pages under each vCPU's RIP and RSP, its per-CPU area. */
  eagerFrames: number;
}

/** An eager copy of the parent's memory into every clone (Xen without paging). */
export interface CopyFigures {
  /** Helper threads that built the clones' shells and copied the memory. */
  threads: number;
  /** The parent's populated pages: each clone has all of them. */
  pagesCopied: number;
  /** Of those, zero pages, which cost no copy. */
  pagesZero: number;
  /** Bytes written into the clones (non-zero pages × clones). */
  bytesCopied: number;
}

export interface DomainRoundOptions {
  /** Where snowflock keeps its files on this host (the run directory). */
  workDirectory: string;
  /** How clones get memory: a copy up front, or on demand (where the hypervisor pages; only in the agent, which keeps them). */
  memory?: "eager" | "ondemand";
  /** The first clone's ID (the others follow it); by default the next free one in the parent's family. */
  firstCloneId?: number;
  /** The clones' IDs, when they do not follow one another (a family spread over hosts); not with ready shells. */
  cloneIds?: number[];
  /** Also freeze the parent's memory into an image for clones on other hosts (the round's exported()). */
  exportImage?: boolean;
  progress?: (line: string) => void;
  /** Each clone, once it knows its ID and before it first runs (a guest's request: its answer). */
  onCloneReady?: (clone: StartedDomain) => void;
  /** Once the parent runs again. */
  onParentResumed?: () => void;
}

/** A round's parent as clones on other hosts start from it: what its descriptor holds, and its frozen memory. */
export interface ExportedImage {
  snapshot: DomainSnapshot;
  /** The image file (frame i at page i; zero frames are holes), for a memory server; close() ends it. */
  fd: number;
  close(): void;
}

/** A round of domains; with `exportImage`, exported() gives the frozen parent once it is distributed. */
export interface DomainRound extends CloneRound<unknown, DomainRoundResult> {
  exported(): ExportedImage | undefined;
}

/** Clones of a parent on another host, started here from its descriptor and its memory server. */
export interface RemoteCloneRequest {
  parentName: string;
  /** The parent's domid on its host, and that inventory host: the clones' family keys name them. */
  parentDomain: number;
  parentHost: string;
  /** The parent's `sf clone` request these clones answer (each is told its clone ID before it runs); none for an operator's fork. */
  replySeq?: string;
  /** The frozen parent: its state, its non-zero pages, and the frames a clone needs before it runs (`pages`' keys). */
  snapshot: Pick<DomainSnapshot, "state" | "nonZeroPages" | "pages">;
  /** The parent's memory server (formatPageServer's text form: tcp:... or mcdist:...). */
  server: string;
  /** Copied into the clones before they run (the default), or paged in on demand from `server` while they run. */
  memory?: "eager" | "ondemand";
  cloneIds: number[];
  workDirectory: string;
  /** Lines on a long fetch of the parent's memory (every few seconds). */
  progress?: (line: string) => void;
}

/** The operator's commands on VMs the hypervisor runs (Xen): fork, ls, kill; and what the host's agent needs to serve the guests. */
export interface DomainOperations {
  readonly maxClones: number;
  /** Refuses a `--memory` this host cannot give clones. */
  checkMemory(memory: string | undefined): void;
  /**
   * One round of clones of the domain `parent` (a name, or a domain's id for a guest's own request),
   * for src/clone/pipeline.ts to run; see DomainRoundOptions.
   */
  round(parent: string | number, clones: number, options: DomainRoundOptions): DomainRound;
  /** Clones of a parent on another host: shells built here, memory copied from its server, then run. */
  startClones(request: RemoteCloneRequest): Promise<StartedDomain[]>;
  /** Memory the hypervisor has free for new domains. */
  freeBytes(): number;
  /** Parents first, each followed by its clones. */
  list(): Promise<DomainListing[]>;
  /** Ends a domain and its clones, or only its clones; the domains ended. */
  kill(name: string, options: { clones?: boolean }): Promise<DomainListing[]>;
  /** The hypervisor and its version, as reports name it. */
  hypervisor(): Promise<string>;
  /** Waits until the domain's drivers are up and it can be suspended (so forked); false if it shut down first. */
  waitReady(name: string, timeoutMs: number): Promise<boolean>;
  /** Hands each new request of a guest (the sf tool) to `onRequest` until stop(); answer() replies to one. */
  guestRequests(
    onRequest: (request: GuestRequest) => void,
    log: (line: string) => void,
  ): { answer(domain: number, seq: string, text: string): void; stop(): Promise<void> };
  /**
   * A domain's place in its family: its clone ID (0 for a parent) and its parent's id (its own for a
   * parent), and for a clone whose parent runs on another host, that inventory host.
   */
  memberOf(domain: number): { cloneId: number; family: number; parentHost?: string };
  /** The domain of family member `cloneId` (0: the parent) of the parent `family` on `parentHost` (undefined: this host), if it runs here. */
  familyMember(parentHost: string | undefined, family: number, cloneId: number): number | undefined;
  /** The running clones of the parent `domain`, by clone ID. */
  clonesOf(domain: number): Array<{ domain: number; cloneId: number }>;
  /** The next free clone ID in the parent's family (clones of earlier rounds keep theirs). */
  nextCloneId(domain: number, round: { clones: number; memory?: "eager" | "ondemand" }): number;
  /** Keeps `clones` shells ready for the forks of `parent` (0: none); see src/backend/xen/ready-shells.ts. */
  pool(
    parent: string,
    clones: number,
    options: { memory: "eager" | "ondemand"; workDirectory: string; progress?: (line: string) => void },
  ): Promise<PoolResult>;
  /** Reads domain `name` for its descriptor; it stands still meanwhile and then carries on. */
  snapshot(name: string): Promise<DomainSnapshot>;
  /** Ends domains (their XenStore entries, console and memory go too). */
  destroy(domains: number[]): void;
  /** In the agent: the clones whose memory its pagers serve, with what each cost so far (empty elsewhere). */
  pagedClones(): PagedClone[];
}

/** A clone whose memory a pager in this process serves (Xen with paging). */
export interface PagedClone {
  domid: number;
  parent: string;
  stats: FaultStats;
  /** Why its pager failed (its domain was ended then). */
  error?: string;
}

/** One fact `doctor` prints about a backend: a label and its value. */
export type DoctorLine = [label: string, value: string];

export type DoctorReport =
  | { backend: BackendName; available: true; memoryOnDemand: boolean; facts: Record<string, unknown>; lines: DoctorLine[] }
  | { backend: BackendName; available: false; reason: string; error: SnowflockError };

export interface Backend {
  readonly name: BackendName;
  /** The CLI commands this backend serves. */
  readonly commands: readonly string[];
  /** How to work with this backend, for a command it does not serve. */
  readonly usage: string;
  /** Throws a typed error saying how to fix the host if this backend cannot run here. */
  check(): void;
  doctor(): Promise<DoctorReport>;
  /** Present where snowflock runs the VMs itself, in its VMM processes. */
  readonly machines?: MachineFactory;
  /** Present where the hypervisor runs the VMs and snowflock attaches to them. */
  readonly domains?: DomainOperations;
}
