/**
 * Replay protection for authenticated control frames (control.ts): per sender, the highest
 * sequence seen and which of the REPLAY_WINDOW before it were seen. A captured frame is accepted
 * once at most, so replaying it cannot make the server send again; frames reordered by less than
 * the window still count. Only holders of the key create senders; their number is bounded anyway.
 */
export const REPLAY_WINDOW = 32;

interface SenderState {
  highest: number;
  /** Bit i: sequence highest - i was seen. */
  seen: number;
}

export class ReplayWindows {
  /** Insertion order is age order: the first sender is the oldest. */
  private readonly senders = new Map<bigint, SenderState>();

  constructor(private readonly maxSenders: number) {}

  /** True the first time `sequence` comes from `sender` (and remembers it); false for a replay or a frame too old. */
  accept(sender: bigint, sequence: number): boolean {
    const state = this.senders.get(sender);
    if (state === undefined) {
      if (this.senders.size >= this.maxSenders) this.senders.delete(this.senders.keys().next().value!);
      this.senders.set(sender, { highest: sequence, seen: 1 });
      return true;
    }
    if (sequence > state.highest) {
      const ahead = sequence - state.highest;
      state.seen = ahead >= REPLAY_WINDOW ? 1 : ((state.seen << ahead) | 1) >>> 0;
      state.highest = sequence;
      return true;
    }
    const age = state.highest - sequence;
    if (age >= REPLAY_WINDOW) return false;
    const bit = (1 << age) >>> 0;
    if ((state.seen & bit) !== 0) return false;
    state.seen = (state.seen | bit) >>> 0;
    return true;
  }
}
