// The jobs the head knows, each registered by its driver when it connects (subjects.headJobRegister). The head's
// record is the source of truth for where a job's workers load code from: lease grants and actor starts carry it,
// never the job a requester's message names. Kept in KV (troupe-job-roots), so a restarted head knows them too.
// A job that has ended (its driver gone, no actor of it alive) is forgotten after a retention, with its record in
// troupe-jobs (what `troupe list jobs` shows): the state of a long-lived cluster stays bounded.
import type { Bus } from '../bus/bus.ts';
import { Table } from '../state/gcs.ts';
import type { JobInfo } from '../protocol/cluster.ts';
import { openKv } from '../state/buckets.ts';
import { ProtocolError } from '../base/errors.ts';
import { checkJob, checkJobRegistration, sameJob, type JobRef, type RuntimeEnvRef } from '../protocol/jobs.ts';
import { nkeyVerifier } from '../bus/nkey.ts';

/** Written by the head alone. */
export const JOB_ROOTS_BUCKET = 'troupe-job-roots';

/** A job's record as kept: the job, and the user its driver registered it with (JobRegistration.key). */
type Registered = JobRef & { key?: string };

export class JobRegistry {
  private readonly jobs = new Map<string, JobRef>();
  /** The user each job's driver registered it with, where it had one. */
  private readonly keys = new Map<string, string>();
  /** Since when each job has looked ended (memory only: a restarted head counts from when it sees it). */
  private readonly endedSince = new Map<string, number>();
  /** Jobs whose driver was found silent (their record marked FAILED once). */
  private readonly driverGone = new Set<string>();

  private constructor(
    private readonly table: Table<Registered>,
    /** The drivers' own records of their jobs (troupe-jobs). */
    private readonly infos: Table<JobInfo>,
  ) {}

  /** Binds to the bucket (made if missing); load() then reads what it holds. */
  static async open(bus: Bus, infos: Table<JobInfo>, timeoutMs?: number): Promise<JobRegistry> {
    const table = new Table<Registered>(await openKv(bus, JOB_ROOTS_BUCKET, { history: 1 }, timeoutMs));
    return new JobRegistry(table, infos);
  }

  async load(): Promise<void> {
    for (const stored of await this.table.list()) {
      try {
        const { job, key } = checkJobRegistration({ job: stored, key: stored.key });
        this.jobs.set(job.id, job);
        if (key) this.keys.set(job.id, key);
      } catch {
        // not ours: skipped
      }
    }
  }

  /** Registers a job, registered by the user `key` (its driver's), or accepts its driver's resend. Another record for
   * a known id (another driver, another root, another user) is refused: a job's root is never overwritten. Stored
   * before the answer. */
  async register(job: JobRef, key?: string): Promise<{ registered: string }> {
    const known = this.jobs.get(job.id);
    if (known) {
      if (sameJob(known, job) && this.keys.get(job.id) === key) return { registered: job.id };
      throw new ProtocolError(
        `job ${job.id} is registered already (by driver ${known.driver}); a job id is registered once, by its driver`,
      );
    }
    this.jobs.set(job.id, job); // before any await: of two registrations racing for one id, one wins
    if (key) this.keys.set(job.id, key);
    try {
      await this.table.put(job.id, key ? { ...job, key } : job);
    } catch (e) {
      this.jobs.delete(job.id);
      this.keys.delete(job.id);
      throw e;
    }
    return { registered: job.id };
  }

  /** Forgets the jobs that have been ended for `retentionMs`: registration and record. A job ends when its driver is
   * silent (`silent(job)`) and none of its actors is alive (`inUse`: a detached actor keeps its job, which it restarts
   * from). When its driver is first found silent, a record it left RUNNING (it was killed, or cut off) is marked
   * FAILED. */
  forgetEnded(now: number, retentionMs: number, silent: (job: JobRef) => boolean, inUse: Set<string>): void {
    for (const job of this.jobs.values()) {
      if (!silent(job)) {
        this.driverGone.delete(job.id);
        this.endedSince.delete(job.id);
        continue;
      }
      if (!this.driverGone.has(job.id)) {
        this.driverGone.add(job.id);
        void this.markFailed(job).catch(() => undefined); // the next head's sweep, if this one goes first
      }
      if (inUse.has(job.id)) {
        this.endedSince.delete(job.id);
        continue;
      }
      const since = this.endedSince.get(job.id);
      if (since === undefined) this.endedSince.set(job.id, now);
      else if (now - since >= retentionMs) {
        this.jobs.delete(job.id);
        this.keys.delete(job.id);
        this.endedSince.delete(job.id);
        this.driverGone.delete(job.id);
        void Promise.all([this.table.delete(job.id), this.infos.delete(job.id)]).catch(() => undefined);
      }
    }
  }

  private async markFailed(job: JobRef): Promise<void> {
    const info = await this.infos.get(job.id);
    if (info?.state !== 'RUNNING' || info.procId !== job.driver) return;
    await this.infos.put(job.id, {
      ...info,
      state: 'FAILED',
      endedAt: new Date().toISOString(),
      cause: `its driver ${job.driver} (pid ${info.pid} on ${info.hostname}) went silent: it died or was cut off`,
    });
  }

  /** The runtime envs of the jobs it knows: what they ship stays in the store (shipping/env-sweep.ts). */
  envs(): RuntimeEnvRef[] {
    return [...this.jobs.values()].flatMap((j) => (j.env ? [j.env] : []));
  }

  /** Whether `proof` (base64url) is the signature of `data` by the user the job's driver registered it with; true for
   * a job registered without one (a bus of plain tokens has no users: any driver may then ask). */
  signedByDriver(jobId: string, data: Uint8Array, proof: string | undefined): boolean {
    const key = this.keys.get(jobId);
    if (!key) return true;
    return proof !== undefined && (nkeyVerifier(key, ['user'])?.(data, Buffer.from(proof, 'base64url')) ?? false);
  }

  /** The head's record of the job a message names (only its id counts); ProtocolError when none was registered. */
  recordOf(named: unknown, what: string): JobRef {
    const { id } = checkJob(named, what);
    const job = this.jobs.get(id);
    if (!job) throw new ProtocolError(`${what} names job ${id}, which no driver registered with the head`);
    return job;
  }
}
