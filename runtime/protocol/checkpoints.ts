// Checkpoints that a worker asks its node for, over their IPC channel (workers have no access to the checkpoint store
// of their own): the names a worker may use, and the messages.
import * as v from 'valibot';
import { schemaCheck } from './check.ts';

/** A checkpoint of a job rather than of one actor (a training run's): `job.<job id>.<name>`. The job's workers and
 * driver may use it; an actor's checkpoint is named by the actor's id. */
export function jobCheckpointName(jobId: string, name: string): string {
  return `job.${jobId}.${name}`;
}

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
