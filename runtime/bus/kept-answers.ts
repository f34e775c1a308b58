// Answers a worker sent over NATS, kept a while for callers that lost them. Core NATS delivers at most once: an
// answer sent while the caller's connection or nats-server was away is gone, and the caller, hearing nothing, asks
// the worker which of its calls it still holds (its probe). A call that ran and was answered is no longer held; with
// its answer kept here the worker sends it again, and the call settles with it instead of running again (retries) or
// failing with CallLostError. Answers on a lane are not kept: a lane loses nothing but by closing, which settles
// its calls.
//
// What is kept is each message of answers as it was sent, by the reply subject of the batch it answered (which the
// caller names in its probe): nothing per call, so keeping costs a map entry per message. Sending one again repeats
// answers the caller may have, which it ignores. Kept oldest first, they go by age and by bytes.

/** One message of answers, as sent on `reply`. */
interface KeptPart {
  reply: string;
  data: Uint8Array;
  at: number;
}

/** Where every troupe process's replies go (runtime/protocol/permissions.ts inboxPrefix): only such a reply subject is
 * ever answered again. */
const INBOXES = '_INBOX.';

/** What keeping a message costs besides its bytes. */
const PART_BYTES = 128;

/** The inbox a reply subject belongs to: `<inbox>.<request id>` (runtime/bus/bus.ts). */
function inboxOf(reply: string): string {
  return reply.slice(0, reply.lastIndexOf('.'));
}

export class KeptAnswers {
  /** By reply subject: the messages that answered that batch. */
  private readonly byReply = new Map<string, KeptPart[]>();
  /** Oldest first, from `head` on. */
  private readonly parts: Array<KeptPart | undefined> = [];
  private head = 0;
  private bytes = 0;

  /** `ttlMs`: how long a caller may take to ask (its probe comes after callProbeMs of silence, and its connection
   * may be away a while); `maxBytes`: what they may hold in all, the oldest going first. */
  constructor(private readonly o: { ttlMs: number; maxBytes: number }) {}

  /** Keeps the message `data`, sent on `reply`. */
  keep(reply: string, data: Uint8Array): void {
    const now = Date.now();
    if (data.length + PART_BYTES <= this.o.maxBytes) {
      const part = { reply, data, at: now };
      const kept = this.byReply.get(reply);
      if (kept) kept.push(part);
      else this.byReply.set(reply, [part]);
      this.parts.push(part);
      this.bytes += data.length + PART_BYTES;
    }
    this.evict(now);
  }

  /** The messages sent on `reply` still kept, for `asker` (the reply subject of the probe that names it) when it is of
   * the same inbox: a caller gets only its own answers again, and one message cannot make a worker send many to
   * someone else. */
  find(reply: string, asker: string): Uint8Array[] {
    if (!reply.startsWith(INBOXES) || inboxOf(asker) !== inboxOf(reply)) return [];
    const now = Date.now();
    return (this.byReply.get(reply) ?? []).filter((p) => now - p.at <= this.o.ttlMs).map((p) => p.data);
  }

  private evict(now: number): void {
    for (let p = this.parts[this.head]; p; p = this.parts[this.head]) {
      if (this.bytes <= this.o.maxBytes && now - p.at <= this.o.ttlMs) break;
      this.parts[this.head++] = undefined;
      this.bytes -= p.data.length + PART_BYTES;
      const kept = this.byReply.get(p.reply);
      if (kept?.[0] === p) kept.shift(); // a batch's messages go in the order they came
      if (kept?.length === 0) this.byReply.delete(p.reply);
    }
    if (this.head > 1024 && this.head * 2 > this.parts.length) {
      this.parts.splice(0, this.head);
      this.head = 0;
    }
  }
}
