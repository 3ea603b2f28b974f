/**
 * The domUs' inboxes of family messages (sf send / sf recv on Xen), kept by the agent of the host
 * they run on: at most `limit` messages each; a receive waits for the next message unless told
 * not to. One receive waits per domain: a newer one takes its place (the guest tool gave up on the
 * older one).
 */
export type Answer = (domain: number, seq: string, text: string) => void;

interface Inbox {
  messages: Array<{ from: number; message: string }>;
  waiting?: string;
}

export class DomainInboxes {
  private inboxes = new Map<number, Inbox>();

  constructor(
    private readonly limit: number,
    private readonly answer: Answer,
  ) {}

  private inbox(domain: number): Inbox {
    let inbox = this.inboxes.get(domain);
    if (!inbox) this.inboxes.set(domain, (inbox = { messages: [] }));
    return inbox;
  }

  /** Hands the message to a waiting receive, or keeps it; false when the inbox is full. */
  put(domain: number, from: number, message: string): boolean {
    const inbox = this.inbox(domain);
    if (inbox.waiting !== undefined) {
      this.answer(domain, inbox.waiting, `ok ${from} ${message}`);
      inbox.waiting = undefined;
      return true;
    }
    if (inbox.messages.length >= this.limit) return false;
    inbox.messages.push({ from, message });
    return true;
  }

  /** Answers request `seq` with the oldest message; without one, at once ("nowait") or when one comes. */
  take(domain: number, seq: string, nowait: boolean): void {
    const inbox = this.inbox(domain);
    const next = inbox.messages.shift();
    if (next) return this.answer(domain, seq, `ok ${next.from} ${next.message}`);
    if (nowait) return this.answer(domain, seq, "error no message");
    inbox.waiting = seq;
  }

  /** The domain has gone: its messages go too (a later domain may get its id). */
  drop(domain: number): void {
    this.inboxes.delete(domain);
  }

  /** Drops the inboxes of every domain not in `running` (they ended in ways the agent did not see). */
  keepOnly(running: ReadonlySet<number>): void {
    for (const domain of this.inboxes.keys()) if (!running.has(domain)) this.inboxes.delete(domain);
  }
}
