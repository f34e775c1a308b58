// The jobs the head knows, each registered by its driver when it connects (subjects.headJobRegister). The head's
// record is the source of truth for where a job's workers load code from: lease grants and actor starts carry it,
// never the job a requester's message names. Kept in KV (troupe-job-roots), so a restarted head knows them too.
import type { Bus } from '../bus/bus.ts';
import { Table } from '../state/gcs.ts';
import { openKv } from '../state/buckets.ts';
import { ProtocolError } from '../base/errors.ts';
import { checkJob, sameJob, type JobRef } from '../protocol/jobs.ts';

/** Written by the head alone. */
export const JOB_ROOTS_BUCKET = 'troupe-job-roots';

export class JobRegistry {
  private readonly jobs = new Map<string, JobRef>();

  private constructor(private readonly table: Table<JobRef>) {}

  static async open(bus: Bus): Promise<JobRegistry> {
    const r = new JobRegistry(new Table<JobRef>(await openKv(bus, JOB_ROOTS_BUCKET, { history: 1 })));
    for (const stored of await r.table.list()) {
      try {
        const job = checkJob(stored, 'a stored job');
        r.jobs.set(job.id, job);
      } catch {
        // not ours: skipped
      }
    }
    return r;
  }

  /** Registers a job, or accepts its driver's resend. Another record for a known id (another driver, another root)
   * is refused: a job's root is never overwritten. Stored before the answer. */
  async register(job: JobRef): Promise<{ registered: string }> {
    const known = this.jobs.get(job.id);
    if (known) {
      if (sameJob(known, job)) return { registered: job.id };
      throw new ProtocolError(
        `job ${job.id} is registered already (by driver ${known.driver}); a job id is registered once, by its driver`,
      );
    }
    this.jobs.set(job.id, job); // before any await: of two registrations racing for one id, one wins
    try {
      await this.table.put(job.id, job);
    } catch (e) {
      this.jobs.delete(job.id);
      throw e;
    }
    return { registered: job.id };
  }

  /** The head's record of the job a message names (only its id counts); ProtocolError when none was registered. */
  recordOf(named: unknown, what: string): JobRef {
    const { id } = checkJob(named, what);
    const job = this.jobs.get(id);
    if (!job) throw new ProtocolError(`${what} names job ${id}, which no driver registered with the head`);
    return job;
  }
}
