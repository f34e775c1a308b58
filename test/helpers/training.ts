// Training runs the trainer's tests share: the replicas alive now, and a run that kills something mid-epoch.
import { train, type TrainOptions } from '../../runtime/index.ts';
import { currentCore } from '../../runtime/core/core.ts';
import { lineJob } from '../fixtures/training.ts';

/** Pids of the training replicas alive now. */
export const replicaPids = async (): Promise<number[]> =>
  (await currentCore().gcs()).actors
    .list()
    .then((all) => all.filter((a) => a.className === 'Replica' && a.state === 'ALIVE').map((a) => a.pid!));

/** Trains lineJob with 2 replicas (4 epochs unless `o` says otherwise), calling `kill` once at step 12 of epoch 2. */
export async function trainWithKill(kill: () => unknown, o: Partial<TrainOptions> = {}) {
  let killed = false;
  const r = await train(lineJob, {
    replicas: 2,
    epochs: 4,
    batchSize: 32,
    checkpointEvery: 5,
    ...o,
    onProgress: ({ epoch, step }) => {
      if (killed || epoch !== 1 || step < 12) return;
      killed = true;
      kill();
    },
  });
  if (!killed) throw new Error('the run ended before the kill');
  return r;
}

/** trainWithKill, SIGKILLing replica 1's process. */
export const trainKillingReplica1 = (o: Partial<TrainOptions>) =>
  trainWithKill(() => replicaPids().then((pids) => process.kill(pids[1], 'SIGKILL')), o);
