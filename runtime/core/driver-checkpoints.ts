// A driver's checkpoints. The driver identity has no access to the checkpoint store: reading it would be reading every
// job's saved states (model weights), and writing it replacing them. Actors save and load theirs in their workers,
// through their node (worker/node-checkpoints.ts); a driver may only have the head remove one of its job's own, as
// train() does with its run's when it returns.
import { PermissionDeniedError } from '../base/errors.ts';
import type { Bus } from '../bus/bus.ts';
import { type CheckpointDelete, checkpointDeleteSigned } from '../protocol/checkpoints.ts';
import type { JobRef } from '../protocol/jobs.ts';
import { subjects } from '../protocol/subjects.ts';
import type { Checkpoints } from '../state/checkpoints.ts';

export class DriverCheckpoints implements Checkpoints {
  constructor(
    private readonly bus: Bus,
    private readonly job: JobRef,
  ) {}

  save(name: string): Promise<void> {
    return Promise.reject(refused('save', name));
  }

  load<T = unknown>(name: string): Promise<{ state: T } | undefined> {
    return Promise.reject(refused('load', name));
  }

  async delete(name: string): Promise<void> {
    const signed = this.bus.user?.user.sign(checkpointDeleteSigned(this.job.id, name));
    const req: CheckpointDelete = { job: this.job, name, ...(signed ? { proof: signed.toString('base64url') } : {}) };
    await this.bus.request(subjects.headCheckpointDelete, req);
  }
}

function refused(what: string, name: string): PermissionDeniedError {
  return new PermissionDeniedError(
    `a driver cannot ${what} checkpoint '${name}': checkpoints are kept by the workers that host actors, through ` +
      "their nodes; a driver may only remove its job's",
  );
}
