/**
 * What the mcdist server has queued and sent, per object (a page or a descriptor chunk) and per
 * destination (the group, or one client by unicast), so that a request costs a send only when
 * its sender cannot have had the object yet. A request heard now was sent after the server last
 * found its socket empty (`heardAfter`): an object sent to the requester (or the group) before
 * that moment was on its way before the request, so the requester lost it and gets it again; one
 * queued, or sent since, answers the request already — however many clones ask, however often
 * they retry. An object sent longer than `resendAfterMs` ago is sent again anyway, so a server too
 * busy to ever find its socket empty still repairs losses.
 */
import { sequenceBefore } from "./group-sequence.ts";
import type { Endpoint } from "./transport.ts";

export type Destination = Endpoint | "group";

export class SendLog {
  private readonly groupSentAt: Float64Array;
  /** The group sequence number of each object's last send to the group. */
  private readonly groupSentSequence: Uint32Array;
  private readonly groupQueued: Uint8Array;
  private readonly everSent: Uint8Array;
  /** Unicast sends and queue entries: rare (the end game), so kept sparse. */
  private readonly peerSentAt = new Map<Endpoint, Map<number, number>>();
  private readonly peerQueued = new Set<string>();

  constructor(
    count: number,
    private readonly resendAfterMs: number,
  ) {
    this.groupSentAt = new Float64Array(count).fill(-Infinity);
    this.groupSentSequence = new Uint32Array(count);
    this.groupQueued = new Uint8Array(count);
    this.everSent = new Uint8Array(count);
  }

  /**
   * Whether a request for `object` (answer to `to`) heard at `now` needs a send, or one queued or
   * sent answers it. `heardFrom`: the group sequence number from which on the requester heard the
   * group (undefined: nothing yet); a group send numbered before it went out before it listened.
   */
  needsSend(object: number, to: Destination, now: number, heardAfter: number, heardFrom: number | undefined): boolean {
    if (this.groupQueued[object] === 1 || (to !== "group" && this.peerQueued.has(peerKey(to, object)))) return false;
    const covers = (sentAt: number) => sentAt >= heardAfter && now - sentAt < this.resendAfterMs;
    const groupCovers =
      covers(this.groupSentAt[object]!) && heardFrom !== undefined && !sequenceBefore(this.groupSentSequence[object]!, heardFrom);
    return !groupCovers && (to === "group" || !covers(this.peerSentAt.get(to)?.get(object) ?? -Infinity));
  }

  queued(object: number, to: Destination): void {
    if (to === "group") this.groupQueued[object] = 1;
    else this.peerQueued.add(peerKey(to, object));
  }

  /** Whether a queued unicast send is still needed: not if the object went to the group since it was queued. */
  stillNeeded(object: number, to: Destination, queuedAt: number): boolean {
    return to === "group" || this.groupSentAt[object]! < queuedAt;
  }

  /** Records a send (to the group: numbered `sequence`); true if the object had been sent before (a retransmission). */
  sent(object: number, to: Destination, now: number, sequence: number): boolean {
    if (to === "group") {
      this.groupQueued[object] = 0;
      this.groupSentAt[object] = now;
      this.groupSentSequence[object] = sequence;
    } else {
      this.peerQueued.delete(peerKey(to, object));
      let sends = this.peerSentAt.get(to);
      if (sends === undefined) this.peerSentAt.set(to, (sends = new Map()));
      sends.set(object, now);
    }
    const again = this.everSent[object] === 1;
    this.everSent[object] = 1;
    return again;
  }

  /** A queued unicast send dropped because a group send answered it meanwhile. */
  dequeued(object: number, to: Endpoint): void {
    this.peerQueued.delete(peerKey(to, object));
  }
}

function peerKey(to: Endpoint, object: number): string {
  return `${to}/${object}`;
}
