// Data-parallel training, driven from the driver: N replica actors, each on its shard, kept equal by allreduce of
// their gradients every step (synchronous SGD) or of their weights every k steps (local SGD). Rank 0 checkpoints
// into the cluster's checkpoint store; when a replica dies, the head restarts it and the group resumes from there.
import { randomBytes } from 'node:crypto';
import type { ActorHandle } from '../handle.ts';
import type { TrainingJob, TrainingMode } from './training-job.ts';
import { specRef } from '../library/exported-spec.ts';
import { CollectiveError } from '../collective/collective.ts';
import type { Replica, ReplicaConfig, EpochStats, Position } from './trainer-replica.ts';
import type { ParamServer, ParamServerConfig } from './param-server.ts';
import {
  ActorDiedError,
  TaskError,
  UsageError,
  bus,
  event,
  guardCheck,
  checkpoints,
  jobCheckpoint,
  killActor,
  requireInit,
  startLibraryActor,
  subjects,
} from '../library/runtime.ts';

/** A replica's progress report from the bus, checked before the user's callback sees it. */
const checkProgress = guardCheck<{ epoch: number; step: number; of: number }>('training progress', (x) => {
  const p = x as Record<string, unknown> | null;
  if (typeof p !== 'object' || p === null) return 'not an object';
  return [p.epoch, p.step, p.of].every((n) => Number.isSafeInteger(n) && (n as number) >= 0)
    ? undefined
    : 'epoch, step and of must be counts';
});

export interface TrainOptions {
  replicas: number;
  epochs: number;
  /** Samples per step on each replica (default 32): the global batch is replicas × batchSize. */
  batchSize?: number;
  /** Resources of each replica (default 1 CPU, no GPU). */
  numCpus?: number;
  numGpus?: number;
  /** 'sync' (default): gradients averaged every step. 'local': weights averaged every `averageEvery` steps.
   * 'ps': parameter servers; each replica pushes its gradient to the shards and takes their new values back. */
  mode?: TrainingMode;
  /** Parameter server mode: shards (actors, default 1), and how many steps a replica may be ahead of the slowest
   * (default 2; 0 keeps them in lockstep, though each gradient is still applied on its own). */
  servers?: number;
  staleness?: number;
  averageEvery?: number;
  /** Local SGD: apply each average one step later, so replicas train on while it travels (delayed averaging). */
  delayAveraging?: boolean;
  /** Steps between checkpoints (default 50; also at each epoch's end). */
  checkpointEvery?: number;
  /** Replica failures survived before train() gives up (default 3). */
  maxFailures?: number;
  /** How long a dead replica may take to come back (default 30 s). One that has not, for lack of resources, is
   * dropped and the others go on as a smaller group with the data sharded again (elastic), down to minReplicas. */
  restartTimeoutMs?: number;
  /** Fewest replicas to go on with (default 1). */
  minReplicas?: number;
  seed?: number;
  /** After each epoch, with rank 0's test figures when the job has test data. */
  onEpoch?(e: EpochResult): void;
  /** As rank 0 goes: steps done of the epoch. */
  onProgress?(p: { epoch: number; step: number; of: number }): void;
}

export interface EpochResult {
  epoch: number;
  /** Mean training loss and accuracy over every replica's samples. */
  loss: number;
  accuracy: number;
  testLoss?: number;
  testAccuracy?: number;
  /** Training samples per second over the whole group. */
  samplesPerSec: number;
  seconds: number;
  /** Share of the replicas' time spent averaging (waiting in allreduce, including for slower replicas). */
  syncShare: number;
  /** Replicas that finished the epoch (fewer than asked for once an elastic run lost some). */
  replicas: number;
}

export interface TrainResult {
  history: EpochResult[];
  /** The trained weights, in the order of model.getWeights(). */
  weights: Float32Array[];
  /** Replica failures the run recovered from. */
  failures: number;
  /** The tfjs backend the replicas computed on. */
  backend: string;
}

/** Trains `job` on `replicas` actors and returns the history and the trained weights. */
export async function train(job: TrainingJob, o: TrainOptions): Promise<TrainResult> {
  const n = o.replicas;
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`replicas must be a positive integer, got ${n}`);
  if (!Number.isInteger(o.epochs) || o.epochs < 1)
    throw new UsageError(`epochs must be a positive integer, got ${o.epochs}`);
  const mode = o.mode ?? 'sync';
  if (mode !== 'sync' && mode !== 'local' && mode !== 'ps')
    throw new UsageError(`mode must be 'sync', 'local' or 'ps', got ${String(mode)}`);
  const [servers, staleness] = [o.servers ?? 1, o.staleness ?? 2];
  if (!Number.isInteger(servers) || servers < 1)
    throw new UsageError(`servers must be a whole number >= 1, got ${servers}`);
  if (!Number.isInteger(staleness) || staleness < 0)
    throw new UsageError(`staleness must be a whole number >= 0, got ${staleness}`);
  if ((o.servers !== undefined || o.staleness !== undefined) && mode !== 'ps')
    throw new UsageError("servers and staleness apply to mode 'ps' only");
  const minReplicas = o.minReplicas ?? 1;
  if (!Number.isInteger(minReplicas) || minReplicas < 1 || minReplicas > n)
    throw new UsageError(`minReplicas must be a whole number from 1 to replicas (${n}), got ${minReplicas}`);
  if (o.delayAveraging && mode !== 'local') throw new UsageError("delayAveraging applies to mode 'local' only");
  const ref = await specRef(job, 'training job', 'train() takes a trainingJob(...)');
  requireInit();
  const run = randomBytes(6).toString('hex');
  // Shards restart from their own actor checkpoints; a push in flight when one dies is sent again.
  const shards =
    mode !== 'ps'
      ? []
      : Array.from({ length: servers }, (_, shard) => {
          const config: ParamServerConfig = { job: ref, run, shard, staleness, replicas: n };
          const options = { numCpus: 0, maxRestarts: -1, maxConcurrency: 2 * n + 4, checkpointEvery: { calls: 100 } };
          return startLibraryActor<ParamServer>('ParamServer', [config], options, 3);
        });
  const base: Omit<ReplicaConfig, 'rank'> = {
    servers: shards,
    job: ref,
    worldSize: n,
    run,
    batchSize: o.batchSize ?? 32,
    epochs: o.epochs,
    mode,
    averageEvery: o.averageEvery ?? 8,
    delayAveraging: o.delayAveraging ?? false,
    checkpointEvery: o.checkpointEvery ?? 50,
    seed: o.seed ?? 1,
  };
  // maxConcurrency 2: abort() must reach a replica while its epoch() waits in a collective.
  let replicas: Array<ActorHandle<Replica>> = Array.from({ length: n }, (_, rank) => {
    const options = { numCpus: o.numCpus ?? 1, numGpus: o.numGpus ?? 0, maxRestarts: -1, maxConcurrency: 2 };
    return startLibraryActor<Replica>('Replica', [{ ...base, rank }], options);
  });
  const progress =
    o.onProgress &&
    bus().on(
      subjects.trainProgress(run),
      event(checkProgress, (p) => o.onProgress!(p)),
    );
  const history: EpochResult[] = [];
  let failures = 0,
    generation = 0,
    backend = '';
  try {
    let at: Position = { epoch: 0, step: 0 };
    const setup = async () => {
      await Promise.all(shards.map((s) => s.reset(generation, replicas.length)));
      const r = await Promise.all(replicas.map((h, rank) => h.setup(generation, { rank, worldSize: replicas.length })));
      backend = r[0].backend;
      at = { epoch: r[0].epoch, step: r[0].step };
    };
    await setup();
    while (at.epoch < o.epochs) {
      const started = Date.now();
      let stats: EpochStats[];
      try {
        stats = await Promise.all(replicas.map((h) => h.epoch(at.epoch, at.step)));
      } catch (e) {
        if (!isReplicaFailure(e) || ++failures > (o.maxFailures ?? 3)) throw e;
        // The others wait in a collective for the dead one: release them, then re-form the group at the checkpoint.
        // (A replica that is not back takes its abort() when it is: survivors() waits for that no longer than for it.)
        for (const h of replicas) Promise.resolve(h.abort()).catch(() => undefined);
        replicas = await survivors(replicas, o.restartTimeoutMs ?? 30_000);
        if (replicas.length < minReplicas)
          throw new ActorDiedError(
            `training stopped: ${replicas.length} of ${n} replicas are left, fewer than minReplicas (${minReplicas})`,
            { cause: e },
          );
        generation++;
        await setup();
        continue;
      }
      const samples = stats.reduce((s, x) => s + x.samples, 0);
      const seconds = (Date.now() - started) / 1000;
      const result: EpochResult = {
        epoch: at.epoch + 1,
        loss: stats.reduce((s, x) => s + x.loss * x.samples, 0) / samples,
        accuracy: stats.reduce((s, x) => s + x.accuracy * x.samples, 0) / samples,
        samplesPerSec: samples / seconds,
        seconds,
        syncShare: stats.reduce((s, x) => s + x.syncMs, 0) / stats.reduce((s, x) => s + x.ms, 0),
        replicas: replicas.length,
      };
      const test = await Promise.resolve(replicas[0].evaluate()).catch((e: Error) =>
        e instanceof TaskError && e.remoteName === UsageError.name ? undefined : Promise.reject(e),
      );
      if (test) Object.assign(result, { testLoss: test.loss, testAccuracy: test.accuracy });
      history.push(result);
      o.onEpoch?.(result);
      at = { epoch: at.epoch + 1, step: 0 };
    }
    return { history, weights: await replicas[0].getWeights(), failures, backend };
  } finally {
    progress?.unsubscribe();
    await Promise.all(
      [...replicas, ...shards].map((h) => killActor(h.actorId, true, 'training ended').catch(() => undefined)),
    );
    await (await checkpoints()).delete(jobCheckpoint(`train-${run}`)).catch(() => undefined);
  }
}

/** The replicas that are up again within `timeoutMs`; the others are stopped (they wait for resources that are
 * gone). */
async function survivors(
  replicas: Array<ActorHandle<Replica>>,
  timeoutMs: number,
): Promise<Array<ActorHandle<Replica>>> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), timeoutMs);
  });
  const up = await Promise.all(
    replicas.map((h) =>
      Promise.race([
        Promise.resolve(h.ping()).then(
          () => true,
          () => false,
        ),
        late,
      ]),
    ),
  );
  clearTimeout(timer);
  await Promise.all(
    replicas
      .filter((_, i) => !up[i])
      .map((h) =>
        killActor(h.actorId, true, 'not restarted in time: training goes on without it').catch(() => undefined),
      ),
  );
  return replicas.filter((_, i) => up[i]);
}

/** A replica died (or a collective failed because one did): worth resuming from the checkpoint. */
function isReplicaFailure(e: unknown): boolean {
  return (
    e instanceof ActorDiedError ||
    (e instanceof TaskError && [CollectiveError.name, ActorDiedError.name].includes(e.remoteName))
  );
}
