// Which processes were heard from lately, from messages anyone on the bus can send: bounded in size.
/** Processes heard from (heartbeats on hbProc), by id, bounded: a flood of made-up ids must not grow it without end.
 * Ids not seen for `forgetMs` are forgotten; while it is full, new ids are not recorded (known ones still are). */
export class SeenTable {
  private readonly seen = new Map<string, number>();
  constructor(
    private readonly forgetMs: number,
    private readonly most = 100_000,
  ) {}

  /** Records that the process `id` was heard from now, if the id looks like one. */
  heard(id: string, now = Date.now()): void {
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) return;
    if (this.seen.size >= this.most && !this.seen.has(id)) {
      this.forget(now);
      if (this.seen.size >= this.most) return;
    }
    this.seen.set(id, now);
  }

  get(id: string): number | undefined {
    return this.seen.get(id);
  }

  has(id: string): boolean {
    return this.seen.has(id);
  }

  set(id: string, at: number): void {
    this.heard(id, at);
  }

  delete(id: string): void {
    this.seen.delete(id);
  }

  /** Forgets ids silent for longer than forgetMs. */
  forget(now = Date.now()): void {
    for (const [id, at] of this.seen) if (now - at > this.forgetMs) this.seen.delete(id);
  }
}
