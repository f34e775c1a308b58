// Jobs: which driver's run a lease, an actor or a worker process belongs to.
import { isAbsolute } from 'node:path';
import { ProtocolError } from '../base/errors.ts';

/** The job (one driver's run, from init() to shutdown()) that work belongs to. A worker is bound to the first job it
 * is leased to and serves no other: the modules it imported are that job's code, and a later run may have changed
 * them. Work submitted from inside a worker belongs to the worker's job. */
export interface JobRef {
  /** Made by init() (JobInfo.jobId). */
  id: string;
  /** The driver's process id: its silence ends the job for the nodes holding its workers. */
  driver: string;
  /** Absolute path of the job's root (its project): workers load only modules inside it. */
  root: string;
}

const JOB_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** A job from the bus, checked: it decides which worker process runs what, and which modules may load. */
export function checkJob(job: unknown, what = 'a lease request'): JobRef {
  const j = job as Partial<JobRef> | undefined;
  if (
    typeof j?.id !== 'string' ||
    !JOB_ID.test(j.id) ||
    typeof j.driver !== 'string' ||
    !JOB_ID.test(j.driver) ||
    typeof j.root !== 'string' ||
    !isAbsolute(j.root)
  )
    throw new ProtocolError(
      `${what} needs job { id, driver, root }: ids of 1 to 64 letters, digits, - or _, and an absolute root`,
    );
  return { id: j.id, driver: j.driver, root: j.root };
}
