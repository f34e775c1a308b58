// Checkpoints that a worker asks its node for, over their IPC channel, and that a driver asks the head to remove:
// neither has access to the checkpoint store of its own. The names each may use, and the messages.
import * as v from 'valibot';
import { schemaCheck } from './check.ts';
import type { JobRef } from './jobs.ts';

/** A checkpoint of a job rather than of one actor (a training run's): `job.<job id>.<name>`. The job's workers may
 * use it, and its driver may remove it; an actor's checkpoint is named by the actor's id. */
export function jobCheckpointName(jobId: string, name: string): string {
  return `job.${jobId}.${name}`;
}

/** Whether `name` is one of the job's own checkpoints (jobCheckpointName). */
export function isJobCheckpoint(jobId: string, name: string): boolean {
  const prefix = jobCheckpointName(jobId, '');
  return name.length > prefix.length && name.startsWith(prefix);
}

/** Driver → head (subjects.headCheckpointDelete): remove one of the job's checkpoints (train() does when it returns).
 * The head removes only a name of the job it has a record of. */
export interface CheckpointDelete {
  job: JobRef;
  name: string;
  /** The driver's signature (base64url) of checkpointDeleteSigned(job id, name), by the user it registered the job
   * with: the head takes the request from that driver only. Absent on a bus of plain tokens. */
  proof?: string;
}

/** What a driver signs to have the head remove one of its job's checkpoints. */
export function checkpointDeleteSigned(jobId: string, name: string): Buffer {
  return Buffer.from(`troupe checkpoint delete\0${jobId}\0${name}`);
}

/** `job` is checked by the head against its records (JobRegistry.recordOf). */
export const checkCheckpointDelete = schemaCheck(
  'checkpoint delete request',
  v.object({
    job: v.unknown(),
    name: v.pipe(v.string(), v.minLength(1), v.maxLength(512)),
    proof: v.optional(v.pipe(v.string(), v.maxLength(200))),
  }),
);

/** Worker → node. `bytes`: the encoded state, for a save. */
export interface CheckpointAsk {
  type: 'checkpoint';
  id: number;
  op: 'save' | 'load' | 'delete';
  name: string;
  bytes?: Uint8Array;
}

/** Node → worker, for the ask with the same id: what was loaded, or the error encoded (codec), or neither. */
export interface CheckpointAnswer {
  type: 'checkpoint';
  id: number;
  bytes?: Uint8Array;
  error?: Uint8Array;
}

/** The worker's process runs the job's code: its asks are untrusted until checked. */
export const checkCheckpointAsk = schemaCheck(
  'checkpoint request',
  v.object({
    type: v.literal('checkpoint'),
    id: v.pipe(v.number(), v.safeInteger()),
    op: v.picklist(['save', 'load', 'delete']),
    name: v.pipe(v.string(), v.minLength(1), v.maxLength(512)),
    bytes: v.optional(v.instance(Uint8Array)),
  }),
);
