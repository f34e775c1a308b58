// The data-parallel trainer: it converges, its replicas stay equal, and it resumes from the last checkpoint when a
// replica is killed mid-epoch.
import test, { type ExecutionContext } from 'ava';
import { jetstream } from '@nats-io/jetstream';
import { Objm } from '@nats-io/obj';
import { isJobCheckpoint } from '../../runtime/protocol/checkpoints.ts';
import { train, UsageError, type EpochResult } from '../../runtime/index.ts';
import { currentCore } from '../../runtime/core/core.ts';
import { useCluster, headBusOf } from '../helpers/cluster.ts';
import { replicaPids, trainKillingReplica1 } from '../helpers/training.ts';
import { lineJob, tellsOptimizerContext, stillJob, tellsScheduleContext } from '../fixtures/training.ts';
import { withSeededMathRandom } from '../../actors/library/seeded-random.ts';
import '@tensorflow/tfjs-backend-cpu'; // the first weights are made here too, to compare with
import { makeHandle, HandleData } from '../../actors/handle.ts';
import type { ParamServer } from '../../actors/train/param-server.ts';

const cluster = useCluster(test, { head: { numCpus: 2 } });

/** The checkpoints of this job in the cluster's store, read with the head's identity (a driver has no access). */
async function jobCheckpoints(t: ExecutionContext): Promise<string[]> {
  const os = await new Objm(jetstream((await headBusOf(t, cluster())).nc)).open('troupe-checkpoints');
  const names = (await os.list()).filter((i) => !i.deleted).map((i) => i.name);
  return names.filter((n) => isJobCheckpoint(currentCore().job!.id, n));
}

test.serial('synchronous data-parallel training converges on a small problem, with 2 replicas', async (t) => {
  const epochs: EpochResult[] = [];
  const r = await train(lineJob, { replicas: 2, epochs: 4, batchSize: 32, onEpoch: (e) => epochs.push(e) });
  t.is(r.history.length, 4);
  t.deepEqual(epochs, r.history);
  t.true(r.history[3].testAccuracy! > 0.95, `test accuracy ${r.history[3].testAccuracy}`);
  t.true(r.history[3].loss < r.history[0].loss);
  t.is(r.failures, 0);
  t.is(r.backend, 'wasm');
  t.deepEqual(
    r.weights.map((w) => w.length),
    [32, 16, 32, 2],
  );
  t.deepEqual(await replicaPids(), [], 'replicas end with the run');
});

test.serial('the same seed trains the same way: first weights and data order are fixed by it', async (t) => {
  const run = (seed: number) => train(lineJob, { replicas: 1, epochs: 1, batchSize: 64, seed });
  const [a, b, c] = [await run(5), await run(5), await run(6)];
  t.deepEqual(b.weights, a.weights);
  t.is(b.history[0].loss, a.history[0].loss);
  t.notDeepEqual(c.weights, a.weights);
});

test.serial("the job's optimizer() is told the run's replica count and mode", async (t) => {
  await t.throwsAsync(train(tellsOptimizerContext, { replicas: 2, epochs: 1 }), {
    message: /optimizer built for \{"replicas":2,"mode":"sync"\}/,
  });
  await t.throwsAsync(train(tellsOptimizerContext, { replicas: 1, epochs: 1, mode: 'local' }), {
    message: /optimizer built for \{"replicas":1,"mode":"local"\}/,
  });
});

test.serial(
  "the job's learningRate() sets the rate of every step, in sync and parameter-server mode, and is told where the " +
    'run is',
  async (t) => {
    const model = await withSeededMathRandom(5, () => lineJob.spec.model());
    const first = model.getWeights().map((w) => w.dataSync() as Float32Array);
    for (const mode of ['sync', 'ps'] as const) {
      const r = await train(stillJob, { replicas: 2, epochs: 1, seed: 5, mode });
      t.deepEqual(r.weights, first, `${mode}: at a rate of 0 the weights stay the first ones`);
    }
    // 1,024 samples per replica in batches of 64: 16 steps an epoch.
    await t.throwsAsync(train(tellsScheduleContext, { replicas: 2, epochs: 2, batchSize: 64 }), {
      message: /rate asked at \{"replicas":2,"mode":"sync","epoch":1,"epochs":2,"step":3,"stepsPerEpoch":16\}/,
    });
  },
);

test.serial('local SGD (weights averaged every k steps) converges too', async (t) => {
  const r = await train(lineJob, { replicas: 2, epochs: 4, batchSize: 32, mode: 'local', averageEvery: 4 });
  t.true(r.history[3].testAccuracy! > 0.95, `test accuracy ${r.history[3].testAccuracy}`);
});

test.serial('a replica killed mid-epoch is restarted and the group resumes from the last checkpoint', async (t) => {
  t.timeout(120_000);
  const r = await trainKillingReplica1({});
  t.is(r.failures, 1);
  t.is(r.history.length, 4);
  t.true(r.history[3].testAccuracy! > 0.95, `test accuracy ${r.history[3].testAccuracy}`);
  t.deepEqual(await jobCheckpoints(t), [], "the run's checkpoint is gone once train() returns (the head removes it)");
});

test.serial('local SGD with delayed averaging (each average applied a step later) converges too', async (t) => {
  const r = await train(lineJob, {
    replicas: 2,
    epochs: 4,
    batchSize: 32,
    mode: 'local',
    averageEvery: 2,
    delayAveraging: true,
  });
  t.true(r.history[3].testAccuracy! > 0.95, `test accuracy ${r.history[3].testAccuracy}`);
  t.deepEqual(
    r.history.map((e) => e.replicas),
    [2, 2, 2, 2],
  );
});

test.serial('bad options are refused at the call', async (t) => {
  await t.throwsAsync(train(lineJob, { replicas: 2, epochs: 1, delayAveraging: true }), {
    instanceOf: UsageError,
    message: /delayAveraging applies to mode 'local' only/,
  });
  await t.throwsAsync(train(lineJob, { replicas: 2, epochs: 1, minReplicas: 3 }), {
    instanceOf: UsageError,
    message: /minReplicas must be a whole number from 1 to replicas \(2\), got 3/,
  });
  await t.throwsAsync(train(lineJob, { replicas: 0, epochs: 1 }), {
    instanceOf: UsageError,
    message: /replicas must be a positive integer/,
  });
});

test.serial(
  'parameter-server mode (2 shards, staleness 1) converges, and no replica runs more than 1 step ahead',
  async (t) => {
    // Read while the run goes on (after epochs 1 to 3): the shards end with it.
    const reads: Array<Promise<number[]>> = [];
    const shardLeads = async () => {
      const shards = (await (await currentCore().gcs()).actors.list()).filter(
        (a) => a.className === 'ParamServer' && a.state === 'ALIVE',
      );
      return Promise.all(
        shards.map(
          async (s) => (await makeHandle<ParamServer>(new HandleData(s.actorId, 'ParamServer', 0)).stats()).maxLead,
        ),
      );
    };
    const r = await train(lineJob, {
      replicas: 2,
      epochs: 4,
      batchSize: 32,
      mode: 'ps',
      servers: 2,
      staleness: 1,
      onEpoch: (e) => {
        if (e.epoch < 4) reads.push(shardLeads());
      },
    });
    const leads = (await Promise.all(reads)).flat();
    t.true(r.history[3].testAccuracy! > 0.95, `test accuracy ${r.history[3].testAccuracy}`);
    t.is(leads.length, 6, `shard stats read: ${leads}`);
    t.true(
      leads.every((l) => l <= 1),
      `leads ${leads}`,
    );
  },
);

test.serial(
  'parameter-server mode resumes after a replica is killed mid-epoch; the shards keep what they learned',
  async (t) => {
    t.timeout(120_000);
    const r = await trainKillingReplica1({ mode: 'ps', servers: 2 });
    t.is(r.failures, 1);
    t.true(r.history[3].testAccuracy! > 0.95, `test accuracy ${r.history[3].testAccuracy}`);
  },
);
