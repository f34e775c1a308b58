// Each job's runtime env on this node, prepared once and outside any lease request: fetching a shipped project may
// take minutes, far longer than the head waits for a grant. Until it is ready, a lease request is answered "ask again"
// (Busy with `preparing`) and reserves nothing.
import type { EnvCache, LocalEnv } from '../shipping/env-cache.ts';
import type { JobRef } from '../protocol/jobs.ts';

/** A request waits this long for an env that is quick to make (in place, or cached) before it is told to ask again. */
const QUICK_MS = 500;
/** A failure is kept this long, so every lease request of the job gets it (not a new fetch each), then tried again. */
const FAILURE_KEPT_MS = 60_000;
/** A ready env is forgotten after this long (cheap to find again in the cache): the map does not grow with jobs. */
const READY_KEPT_MS = 10 * 60_000;

interface Prep {
  settled: boolean;
  local?: LocalEnv;
  error?: unknown;
  done: Promise<void>;
}

export class JobEnvs {
  private readonly preps = new Map<string, Prep>();

  constructor(readonly cache: EnvCache) {}

  /** The job's env when it is ready; undefined while it is being prepared (ask again); throws why it cannot be made
   * here (RuntimeEnvError). */
  async ready(job: JobRef): Promise<LocalEnv | undefined> {
    let prep = this.preps.get(job.id);
    if (!prep) {
      const p: Prep = { settled: false, done: Promise.resolve() };
      p.done = this.cache.localEnv(job).then(
        (local) => this.settle(job.id, p, { local }, READY_KEPT_MS),
        (error: unknown) => this.settle(job.id, p, { error }, FAILURE_KEPT_MS),
      );
      this.preps.set(job.id, p);
      prep = p;
    }
    if (!prep.settled) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([prep.done, new Promise((r) => (timer = setTimeout(r, QUICK_MS)))]);
      clearTimeout(timer);
    }
    if (!prep.settled) return undefined;
    if (prep.error !== undefined) throw prep.error;
    return prep.local;
  }

  private settle(jobId: string, p: Prep, result: { local?: LocalEnv; error?: unknown }, keepMs: number): void {
    Object.assign(p, result, { settled: true });
    setTimeout(() => {
      if (this.preps.get(jobId) === p) this.preps.delete(jobId);
    }, keepMs).unref();
  }
}
