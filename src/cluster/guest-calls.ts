/**
 * KVM's front end to the Impromptu Cluster API: a guest's hypercall (number, arguments, guest
 * pointers) turned into a call on its family, and the answer written back into guest memory.
 * Every guest pointer is checked here, against the guest's RAM, before the family is asked
 * anything and again before a result is written (the guest may have been moved meanwhile); a
 * pointer the guest does not own fails the call with SF_EFAULT and changes nothing.
 */
import type { GuestCall } from "../backend/backend.ts";
import { ClusterCall, GuestError, JOIN_NONBLOCK, MESSAGE_MAX, RECV_NONBLOCK } from "../guest/hypercalls.ts";
import { type JoinedClone, joinAnswer } from "./join-answer.ts";

/** The guest's RAM as the front end sees it: a view of [address, address + length), if the guest owns all of it. */
export interface GuestRam {
  guestRange(address: bigint, length: bigint): Uint8Array | undefined;
}

/** A guest error code (GuestError), as the calls return it. */
export type GuestErrorCode = bigint;

/** The family's side of each call, in terms of values rather than guest pointers. */
export interface FamilyCalls {
  requestTicket(wanted: bigint): Promise<{ ticket: number; granted: number } | GuestErrorCode>;
  /** `block`: the guest-physical call block each clone's copy of the call returns through. */
  clone(ticket: bigint, block: number): Promise<bigint>;
  /** How many statuses a join of `ticket` writes (its clones), or why it cannot be joined. */
  joinable(ticket: bigint): { clones: number } | GuestErrorCode;
  /** Waits for every clone of `ticket` to end; their statuses, by clone ID. */
  join(ticket: bigint): Promise<number[]>;
  /** Joins every ticket cloned and not joined (SF_EAGAIN while a clone runs, if `nonblocking`). */
  joinAll(nonblocking: boolean): Promise<JoinedClone[] | GuestErrorCode>;
  /** Ends a ticket's running clones; ticket 0: those of every ticket not joined, returning how many. */
  kill(ticket: bigint): Promise<bigint>;
  /** Sends `data` to member `destination`; its length, or an error. */
  send(destination: bigint, data: Uint8Array): Promise<bigint>;
  /** The next message if one fits in `capacity` bytes (taken from the inbox), or an error (the message stays). */
  receive(capacity: bigint, nonblocking: boolean): Promise<{ from: number; data: Uint8Array } | GuestErrorCode>;
  checkpoint(block: number): Promise<bigint>;
  createClones(checkpoint: bigint, ticket: bigint): Promise<bigint>;
  releaseCheckpoint(checkpoint: bigint): bigint;
}

/** Most statuses one sf_join writes. */
const JOIN_MAX_STATUSES = 4096n;

function writeU64(ram: GuestRam, address: bigint, value: bigint): boolean {
  const out = ram.guestRange(address, 8n);
  if (out) new DataView(out.buffer, out.byteOffset, 8).setBigUint64(0, BigInt.asUintN(64, value), true);
  return out !== undefined;
}

export async function serveGuestCall(family: FamilyCalls, ram: GuestRam, call: GuestCall): Promise<bigint> {
  const [a0 = 0n, a1 = 0n, a2 = 0n, a3 = 0n] = call.args;
  switch (call.nr) {
    case ClusterCall.REQUEST_TICKET:
      return requestTicket(family, ram, a0, a1);
    case ClusterCall.CLONE:
      return family.clone(a0, call.blockAddress);
    case ClusterCall.JOIN:
      return join(family, ram, a0, a1, a2);
    case ClusterCall.KILL:
      return family.kill(a0);
    case ClusterCall.JOIN_ALL:
      return joinAll(family, ram, a0, a1, a2);
    case ClusterCall.SEND:
      return send(family, ram, a0, a1, a2);
    case ClusterCall.RECV:
      return receive(family, ram, a0, a1, a2, a3);
    case ClusterCall.CHECKPOINT_PARENT:
      return family.checkpoint(call.blockAddress);
    case ClusterCall.CREATE_CLONES:
      return family.createClones(a0, a1);
    case ClusterCall.RELEASE_CHECKPOINT:
      return family.releaseCheckpoint(a0);
    default:
      return GuestError.ENOSYS;
  }
}

/** sf_request_ticket(wanted, &granted): the ticket's ID; `granted` (if not 0) gets how many clones it allows. */
async function requestTicket(family: FamilyCalls, ram: GuestRam, wanted: bigint, grantedAddress: bigint): Promise<bigint> {
  if (wanted < 1n) return GuestError.EINVAL;
  if (grantedAddress !== 0n && !ram.guestRange(grantedAddress, 8n)) return GuestError.EFAULT;
  const ticket = await family.requestTicket(wanted);
  if (typeof ticket === "bigint") return ticket;
  if (grantedAddress !== 0n) writeU64(ram, grantedAddress, BigInt(ticket.granted));
  return BigInt(ticket.ticket);
}

/** sf_join(ticket, statuses, capacity): waits for the ticket's clones; writes up to `capacity` statuses; their number. */
async function join(family: FamilyCalls, ram: GuestRam, ticket: bigint, statusesAddress: bigint, capacity: bigint): Promise<bigint> {
  const joinable = family.joinable(ticket);
  if (typeof joinable === "bigint") return joinable;
  const count = Math.min(Number(capacity > JOIN_MAX_STATUSES ? JOIN_MAX_STATUSES : capacity), joinable.clones);
  if (!ram.guestRange(statusesAddress, BigInt(count * 8))) return GuestError.EFAULT;
  const statuses = await family.join(ticket);
  const out = ram.guestRange(statusesAddress, BigInt(count * 8));
  if (!out) return GuestError.EFAULT;
  const view = new DataView(out.buffer, out.byteOffset, count * 8);
  statuses.slice(0, count).forEach((status, i) => view.setBigInt64(i * 8, BigInt(status), true));
  return BigInt(statuses.length);
}

/** Least room a join-all answer needs: its clone IDs and statuses for a full round of clones, without results. */
const JOIN_ALL_MIN_CAPACITY = 1024n;

/**
 * sf_join_all(text, capacity, flags): joins every ticket cloned and not joined; writes sf join's
 * answer (join-answer.ts: results left out if they do not fit); its length.
 */
async function joinAll(family: FamilyCalls, ram: GuestRam, address: bigint, capacity: bigint, flags: bigint): Promise<bigint> {
  if (capacity < JOIN_ALL_MIN_CAPACITY) return GuestError.EINVAL;
  const room = capacity > BigInt(MESSAGE_MAX) ? BigInt(MESSAGE_MAX) : capacity;
  if (!ram.guestRange(address, room)) return GuestError.EFAULT;
  const ended = await family.joinAll((flags & JOIN_NONBLOCK) !== 0n);
  if (typeof ended === "bigint") return ended;
  const text = new TextEncoder().encode(joinAnswer(ended, Number(room)).text);
  const out = ram.guestRange(address, BigInt(text.byteLength));
  if (!out || text.byteLength > room) return text.byteLength > room ? GuestError.E2BIG : GuestError.EFAULT;
  out.set(text);
  return BigInt(text.byteLength);
}

/** sf_send(destination, buffer, length): the length sent. */
async function send(family: FamilyCalls, ram: GuestRam, destination: bigint, address: bigint, length: bigint): Promise<bigint> {
  if (length > BigInt(MESSAGE_MAX)) return GuestError.E2BIG;
  const data = ram.guestRange(address, length);
  if (!data) return GuestError.EFAULT;
  return family.send(destination, data.slice());
}

/** sf_recv(buffer, capacity, &sender, flags): the message's length; `sender` (if not 0) gets who sent it. */
async function receive(
  family: FamilyCalls,
  ram: GuestRam,
  address: bigint,
  capacity: bigint,
  senderAddress: bigint,
  flags: bigint,
): Promise<bigint> {
  if (!ram.guestRange(address, capacity > BigInt(MESSAGE_MAX) ? BigInt(MESSAGE_MAX) : capacity)) return GuestError.EFAULT;
  if (senderAddress !== 0n && !ram.guestRange(senderAddress, 8n)) return GuestError.EFAULT;
  const message = await family.receive(capacity, (flags & RECV_NONBLOCK) !== 0n);
  if (typeof message === "bigint") return message;
  const out = ram.guestRange(address, BigInt(message.data.byteLength));
  if (!out) return GuestError.EFAULT;
  out.set(message.data);
  if (senderAddress !== 0n) writeU64(ram, senderAddress, BigInt(message.from));
  return BigInt(message.data.byteLength);
}
