/**
 * What a client learns from the sequence numbers of the server's sends to the group (frame.ts):
 * they count on by one, so a number that jumps ahead means objects this client never got, lost on
 * the way (an emulated NIC, a switch, this socket). Unlike a timeout, which also comes of a clone
 * that waited for a core with nothing lost, a gap is a loss. Numbers behind the last one (a late
 * frame, a replay) and unicast sends tell nothing. The numbers are not authenticated: a forger can
 * make a client report losses, and so its server slow down (to its floor), not go wrong; or make it
 * claim to have listened from another number than it did (`heardFrom`), so its server sends a page
 * again that it need not, or lets it wait for its retry as if it had listened all along.
 */
import { GROUP_SEQUENCE_MASK, UNICAST_SEQUENCE } from "./frame.ts";

/** A jump ahead by less than this is a gap; more, the number is behind (31-bit wrap-around). */
const AHEAD = 0x40000000;

/** Whether group sequence number `a` came before `b` (31-bit wrap-around). */
export function sequenceBefore(a: number, b: number): boolean {
  const step = (b - a) & GROUP_SEQUENCE_MASK;
  return step !== 0 && step < AHEAD;
}

export class GroupSequence {
  private last: number | undefined;
  private lost = false;
  private first: number | undefined;

  /** The sequence number of one frame the server sent (to the group, or to someone by unicast). */
  note(sequence: number): void {
    if ((sequence & UNICAST_SEQUENCE) !== 0) return;
    this.first ??= sequence;
    if (this.last !== undefined) {
      const step = (sequence - this.last) & GROUP_SEQUENCE_MASK;
      if (step === 0 || step >= AHEAD) return; // a fragment of the same object, or behind
      if (step > 1) this.lost = true;
    }
    this.last = sequence;
  }

  /**
   * The first number of the objects this client listened for whole (requests say so): the one after
   * the first it heard, whose earlier fragments may have gone by before it joined. Undefined: it
   * heard nothing from the group yet.
   */
  get heardFrom(): number | undefined {
    return this.first === undefined ? undefined : (this.first + 1) & GROUP_SEQUENCE_MASK;
  }

  /** Whether a gap showed since the last takeLoss(). */
  get lossSeen(): boolean {
    return this.lost;
  }

  /** Whether a gap showed since the last call. */
  takeLoss(): boolean {
    const lost = this.lost;
    this.lost = false;
    return lost;
  }
}
