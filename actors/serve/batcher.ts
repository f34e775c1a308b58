// Dynamic batching: requests that arrive close together are run as one batch. A batch runs when it is full or when
// its oldest request has waited maxWaitMs, whichever comes first, so a lone request is never held longer than that.

export interface BatchRecord {
  size: number;
  /** How long the batch's oldest request waited before the batch ran. */
  waitedMs: number;
  /** 'full': it reached maxBatchSize; 'wait': its oldest request had waited maxWaitMs. */
  reason: 'full' | 'wait';
  runMs: number;
}

interface Pending<I, O> {
  input: I;
  at: number;
  resolve(v: O): void;
  reject(e: unknown): void;
}

export class Batcher<I, O> {
  private queue: Array<Pending<I, O>> = [];
  private timer?: NodeJS.Timeout;
  private running = false;
  /** The latest batches, newest last (at most `keep`). */
  readonly history: BatchRecord[] = [];
  requests = 0;
  batches = 0;

  constructor(
    private readonly maxBatchSize: number,
    private readonly maxWaitMs: number,
    /** Runs a batch; returns one output per input, in order. */
    private readonly run: (inputs: I[]) => Promise<O[]> | O[],
    private readonly keep = 100,
  ) {}

  submit(input: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.queue.push({ input, at: performance.now(), resolve, reject });
      this.requests++;
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.running || !this.queue.length) return;
    if (this.queue.length >= this.maxBatchSize) {
      clearTimeout(this.timer);
      this.timer = undefined;
      void this.next('full');
    } else if (!this.timer) {
      this.timer = setTimeout(() => this.waited(), this.waitLeft());
    }
  }

  private waitLeft(): number {
    return Math.max(0, Math.ceil(this.queue[0].at + this.maxWaitMs - performance.now()));
  }

  /** Timers count whole milliseconds from the loop's clock and may fire a little early: wait out the rest. */
  private waited(): void {
    this.timer = undefined;
    if (!this.queue.length) return;
    const left = this.waitLeft();
    if (left > 0) this.timer = setTimeout(() => this.waited(), left);
    else void this.next('wait');
  }

  private async next(reason: BatchRecord['reason']): Promise<void> {
    this.running = true;
    const batch = this.queue.splice(0, this.maxBatchSize);
    const started = performance.now();
    try {
      const out = await this.run(batch.map((p) => p.input));
      if (out.length !== batch.length) throw new Error(`a batch of ${batch.length} gave ${out.length} outputs`);
      batch.forEach((p, i) => p.resolve(out[i]));
    } catch (e) {
      for (const p of batch) p.reject(e);
    }
    this.batches++;
    this.history.push({
      size: batch.length,
      waitedMs: started - batch[0].at,
      reason,
      runMs: performance.now() - started,
    });
    if (this.history.length > this.keep) this.history.shift();
    // One turn before the next batch: the answers just given leave now instead of waiting behind its compute.
    setImmediate(() => {
      this.running = false;
      this.schedule();
    });
  }
}
