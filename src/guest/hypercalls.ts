/**
 * The host side of the guest hypercall ABI (guest/ABI.md). The guest is untrusted: the call
 * block and every pointer and length in it are checked against guest RAM first, and a bad call
 * fails with an error code in the block while the VM goes on.
 */
import type { GuestMemory } from "../guest-memory/guest-memory.ts";
import { PAGE_SIZE, translate } from "../guest-memory/layout.ts";

export const HYPERCALL_PORT = 0x0ed0;
/**
 * The same calls for code that cannot use the port: a 4-byte write of the block's address to
 * this guest-physical address (in the 32-bit hole, no RAM or device behind it). A Linux user
 * process maps it from /dev/mem: unlike port I/O it needs no I/O permission bitmap in the TSS.
 */
export const HYPERCALL_DOORBELL = 0xd0100000;
export const ABI_VERSION = 1;
export const CALL_BLOCK_SIZE = 64;
const RESULT_OFFSET = 56;

export const Hypercall = {
  ABI_VERSION: 1,
  EXIT: 2,
  CONSOLE_WRITE: 3,
  CLONE_ID: 4,
  FREE_PAGES: 5,
  ALLOCATED: 6,
} as const;

export const GuestError = {
  EPERM: -1n,
  ESRCH: -3n,
  EAGAIN: -11n,
  EBUSY: -16n,
  E2BIG: -7n,
  EFAULT: -14n,
  EINVAL: -22n,
  ENOSYS: -38n,
  /** A per-VM limit (src/guest/limits.ts): a full inbox, too many checkpoints or tickets. */
  EDQUOT: -122n,
} as const;

export const CONSOLE_WRITE_MAX = 65536n;
/** What a clone may hand its parent with sf exit: a digest, a count, a word (on every backend). */
export const EXIT_RESULT = /^[0-9A-Za-z._+-]{1,64}$/;
const EXIT_RESULT_MAX = 64n;
/** Page frames a free-page bitmap may describe: 1 TiB of guest-physical space. */
export const MAX_FREE_PAGE_FRAMES = 2 ** 28;

/** The Impromptu Cluster API: served by the VMM's family, not here. */
export const ClusterCall = {
  REQUEST_TICKET: 16,
  CLONE: 17,
  JOIN: 18,
  KILL: 19,
  SEND: 20,
  RECV: 21,
  CHECKPOINT_PARENT: 22,
  CREATE_CLONES: 23,
  RELEASE_CHECKPOINT: 24,
  JOIN_ALL: 25,
} as const;
const CLUSTER_CALLS = new Set<number>(Object.values(ClusterCall));
export const RECV_NONBLOCK = 1n;
export const JOIN_NONBLOCK = 1n;
/** What sf_join reports for a clone that did not exit by itself (guest/ABI.md; also the Xen sf tool's join). */
export const CloneStatus = { KILLED: -9, CRASHED: -11 } as const;
export const MESSAGE_MAX = 65536;

/** What a hypercall may ask of the VMM that runs the guest. */
export interface HypercallHost {
  /** `result`: a short word for the parent's join (EXIT_RESULT), if the guest gave one. */
  exit(status: number, result?: string): void;
  consoleWrite(bytes: Uint8Array): void;
  cloneId(): number;
  /** The guest's page allocator bitmap (checked to lie in guest memory): bit = 1 means used. */
  freePages(address: number, frames: number): void;
  /** The guest's allocator handed out `pages` pages starting at byte `offset` of guest memory (checked). */
  allocated(offset: number, pages: number): void;
}

export type HypercallOutcome =
  | { kind: "done"; nr: number; result: bigint }
  /** A cluster call: the caller must be held until the VMM writes the result. */
  | { kind: "deferred"; nr: number; args: bigint[] }
  /** The block address itself was unusable; nothing was written to the guest. */
  | { kind: "bad-block"; address: number };

/** Handles one hypercall whose block the guest placed at guest-physical `blockAddress`. */
export function handleHypercall(memory: GuestMemory, blockAddress: number, host: HypercallHost): HypercallOutcome {
  if (blockAddress % 8 !== 0) return { kind: "bad-block", address: blockAddress };
  const block = memory.guestRange(BigInt(blockAddress), BigInt(CALL_BLOCK_SIZE));
  if (!block) return { kind: "bad-block", address: blockAddress };
  const view = new DataView(block.buffer, block.byteOffset, CALL_BLOCK_SIZE);
  const nr = view.getUint32(0, true);
  const arg = (i: number) => view.getBigUint64(8 + i * 8, true);
  if (CLUSTER_CALLS.has(nr)) return { kind: "deferred", nr, args: [0, 1, 2, 3, 4, 5].map(arg) };
  const result = dispatch(memory, host, nr, arg);
  view.setBigInt64(RESULT_OFFSET, result, true);
  return { kind: "done", nr, result };
}

function dispatch(memory: GuestMemory, host: HypercallHost, nr: number, arg: (i: number) => bigint): bigint {
  switch (nr) {
    case Hypercall.ABI_VERSION:
      return BigInt(ABI_VERSION);
    case Hypercall.EXIT: {
      // (status, result_gpa, result_len): a result is optional, and a bad one leaves the VM running.
      const length = arg(2);
      if (length > EXIT_RESULT_MAX) return GuestError.E2BIG;
      const bytes = length === 0n ? undefined : memory.guestRange(arg(1), length);
      if (length !== 0n && !bytes) return GuestError.EFAULT;
      const result = bytes && new TextDecoder().decode(bytes);
      if (result !== undefined && !EXIT_RESULT.test(result)) return GuestError.EINVAL;
      host.exit(Number(arg(0) & 0xffn), result);
      return 0n;
    }
    case Hypercall.CONSOLE_WRITE: {
      const length = arg(1);
      if (length > CONSOLE_WRITE_MAX) return GuestError.E2BIG;
      const bytes = memory.guestRange(arg(0), length);
      if (!bytes) return GuestError.EFAULT;
      host.consoleWrite(bytes.slice());
      return length;
    }
    case Hypercall.CLONE_ID:
      return BigInt(host.cloneId());
    case Hypercall.FREE_PAGES: {
      const frames = arg(1);
      if (frames === 0n || frames > BigInt(MAX_FREE_PAGE_FRAMES)) return GuestError.EINVAL;
      if (!memory.guestRange(arg(0), (frames + 7n) / 8n)) return GuestError.EFAULT;
      host.freePages(Number(arg(0)), Number(frames));
      return 0n;
    }
    case Hypercall.ALLOCATED: {
      const pages = arg(1);
      if (arg(0) % BigInt(PAGE_SIZE) !== 0n || pages === 0n || pages > BigInt(MAX_FREE_PAGE_FRAMES)) return GuestError.EINVAL;
      const offset = translate(memory.layout, arg(0), pages * BigInt(PAGE_SIZE));
      if (offset === undefined) return GuestError.EFAULT;
      host.allocated(offset, Number(pages));
      return 0n;
    }
    default:
      return GuestError.ENOSYS;
  }
}

/** Completes a deferred call: writes its result into the guest's call block (if still valid). */
export function writeHypercallResult(memory: GuestMemory, blockAddress: number, result: bigint): boolean {
  const block = memory.guestRange(BigInt(blockAddress), BigInt(CALL_BLOCK_SIZE));
  if (!block) return false;
  new DataView(block.buffer, block.byteOffset, CALL_BLOCK_SIZE).setBigInt64(RESULT_OFFSET, result, true);
  return true;
}
