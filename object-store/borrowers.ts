// The other processes that hold refs to one object of ours, as their borrow messages tell. A borrower's messages about
// one object may arrive out of order: its borrow goes ahead of a call's answer on the lane that call came by, while
// its later messages go over NATS, and the two ways do not keep each other's order. So each message a borrower sends
// about its own refs carries a number from a counter of its own that only grows; one numbered lower than the last heard
// from that process about the object is older news, and is dropped. (Without that, a "no longer borrowed" overtaken
// by a new borrow would free the object under its borrower.)

/** What one process last said about the object: whether it holds a ref, and the number of that message. */
interface Heard {
  holds: boolean;
  /** Its node, for when a node dies. */
  node?: string;
  /** The highest number heard from it (0: only messages sent on its behalf). */
  seq: number;
}

export class Borrowers {
  /** Kept when a process lets go, for its number: until the object is freed, or the process exits. */
  private readonly heard = new Map<string, Heard>();
  private holding = 0;

  /** How many processes hold the object now. */
  get size(): number {
    return this.holding;
  }

  /** A borrow message about `proc`. `seq`: the number `proc` sent it with; none when another process sent it on
   * proc's behalf (it gave proc the ref while holding it itself, so the object cannot go meanwhile). */
  hear(proc: string, holds: boolean, node?: string, seq?: number): void {
    const was = this.heard.get(proc);
    if (seq === undefined) {
      if (!holds || was?.holds) return; // only its own messages let go
      this.set(proc, { holds, node, seq: was?.seq ?? 0 }, was);
      return;
    }
    if (was && seq <= was.seq) return; // older than what it said last
    this.set(proc, { holds, node: node ?? was?.node, seq }, was);
  }

  /** Forgets the processes `pred` names (exited, or on a node that died); returns whether one of them held it. */
  drop(pred: (proc: string, node: string | undefined) => boolean): boolean {
    let dropped = false;
    for (const [proc, h] of this.heard)
      if (pred(proc, h.node)) {
        this.heard.delete(proc);
        if (h.holds) {
          this.holding--;
          dropped = true;
        }
      }
    return dropped;
  }

  private set(proc: string, now: Heard, was: Heard | undefined): void {
    this.heard.set(proc, now);
    this.holding += Number(now.holds) - Number(was?.holds ?? false);
  }
}
