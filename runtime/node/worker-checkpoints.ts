// The node's half of its workers' checkpoints (worker/node-checkpoints.ts): it keeps them in the cluster's store with
// its own identity, for the names the asking worker may use: the ids of the actors it hosts now, and its job's own
// names (protocol/checkpoints.ts). The worker's process runs the job's code, so each ask is checked first.
import type { ChildProcess } from 'node:child_process';
import { encode } from '../base/codec.ts';
import { asError, PermissionDeniedError, ProtocolError } from '../base/errors.ts';
import { checked } from '../protocol/check.ts';
import {
  checkCheckpointAsk,
  isJobCheckpoint,
  jobCheckpointName,
  type CheckpointAnswer,
} from '../protocol/checkpoints.ts';
import type { CheckpointStore } from '../state/checkpoints.ts';

/** What the node knows of the worker that asks. */
export interface CheckpointUser {
  hosts(actorId: string): boolean;
  /** The job it serves; undefined before its first lease. */
  jobId(): string | undefined;
}

/** Answers the checkpoint asks of the worker process `child`. */
export function serveWorkerCheckpoints(
  child: ChildProcess,
  user: CheckpointUser,
  store: () => Promise<CheckpointStore>,
): void {
  const answer = async (m: unknown): Promise<Omit<CheckpointAnswer, 'id'>> => {
    const ask = checked(checkCheckpointAsk, m);
    const job = user.jobId();
    if (!user.hosts(ask.name) && !(job && isJobCheckpoint(job, ask.name)))
      throw new PermissionDeniedError(
        'a worker may use the checkpoints of the actors it hosts and of its job ' +
          `(${jobCheckpointName(job ?? '<id>', '…')}), not '${ask.name.slice(0, 100)}'`,
      );
    const s = await store();
    if (ask.op === 'load') {
      const bytes = await s.loadEncoded(ask.name);
      return { type: 'checkpoint', ...(bytes && { bytes }) };
    }
    if (ask.op === 'delete') await s.delete(ask.name);
    // Kept as its job's (a worker with a lease serves one): it counts against that job's share of the store.
    else if (ask.bytes) await s.saveEncoded(ask.name, ask.bytes, job);
    else throw new ProtocolError('a checkpoint save needs its bytes');
    return { type: 'checkpoint' };
  };
  child.on('message', (m: { type?: unknown; id?: unknown }) => {
    if (m?.type !== 'checkpoint') return;
    const id = typeof m.id === 'number' ? m.id : -1;
    void answer(m)
      .catch((e: unknown) => ({ type: 'checkpoint' as const, error: encode(asError(e)) }))
      .then((a) => {
        if (child.connected) child.send({ ...a, id }, () => undefined); // gone meanwhile: nobody waits
      });
  });
}
