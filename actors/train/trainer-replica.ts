// One replica of a data-parallel training run: an actor that holds a copy of the model and its shard of the data,
// and keeps its copy equal to the others' through collectives. Loaded only in the worker processes that train, so
// drivers never load tfjs for it.
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-layers'; // registers the gradient of every op
import type { LayersModel } from '@tensorflow/tfjs-layers';
import { Actor } from '../actor.ts';
import { joinGroup, CollectiveError, type CollectiveGroup } from '../collective/collective.ts';
import { optimizerState, restoreOptimizer, setLearningRate } from './optimizer-state.ts';
import type { ActorHandle } from '../handle.ts';
import type { ParamServer } from './param-server.ts';
import type { TrainingJobSpec, TrainingData, TrainingMode } from './training-job.ts';
import { loadSpec, type SpecRef } from '../library/exported-spec.ts';
import { withSeededMathRandom } from '../library/seeded-random.ts';
import { UsageError, libraryActor, bus, checkpoints, jobCheckpoint, subjects } from '../library/runtime.ts';

export interface ReplicaConfig {
  job: SpecRef;
  rank: number;
  worldSize: number;
  /** Names the run: its collective group, checkpoint and progress subject. */
  run: string;
  batchSize: number;
  /** Epochs of the whole run (for the job's learningRate()). */
  epochs: number;
  mode: TrainingMode;
  /** Parameter server mode: the shards, each holding a contiguous slice of the trainable parameters. */
  servers: Array<ActorHandle<ParamServer>>;
  /** Local SGD: average the weights every this many steps. */
  averageEvery: number;
  /** Local SGD: apply each average a step later, training on while it travels. */
  delayAveraging: boolean;
  /** Steps between checkpoints (rank 0 saves them). */
  checkpointEvery: number;
  seed: number;
}

export interface Position {
  epoch: number;
  step: number;
}
export interface EpochStats {
  loss: number;
  accuracy: number;
  samples: number;
  steps: number;
  ms: number;
  syncMs: number;
}
interface Checkpoint extends Position {
  weights: Float32Array[];
  optimizer: Float32Array[];
  stepsPerEpoch: number;
}
/** A weight average on its way: the weights it started from and the average to come. */
interface Averaging {
  from: Float32Array[];
  average: Promise<Float32Array[]>;
}

export class Replica extends Actor {
  private spec!: TrainingJobSpec;
  private model!: LayersModel;
  private optimizer!: tf.Optimizer;
  private data!: TrainingData;
  private group?: CollectiveGroup;
  private stepsPerEpoch = 0;
  private globalStep = 0;
  private averaging?: Averaging;
  private generation = 0;
  /** Parameter server mode: steps pushed in this generation. */
  private pushes = 0;
  /** Where this replica stands in the group now: an elastic run re-forms it smaller. */
  private rank: number;
  private worldSize: number;
  /** The checkpoint being saved: the next step trains on meanwhile (in sync mode the others would wait for it). */
  private saving?: Promise<void>;

  constructor(private readonly c: ReplicaConfig) {
    super();
    this.rank = c.rank;
    this.worldSize = c.worldSize;
  }

  /** (Re)forms the group and brings every replica to the same state: the last checkpoint, or rank 0's first weights.
   * `at` gives a new place in a smaller group (elastic: a replica was lost); the data is sharded again for it. */
  async setup(
    generation: number,
    at?: { rank: number; worldSize: number },
  ): Promise<Position & { stepsPerEpoch: number; backend: string }> {
    this.group?.leave();
    await this.saving?.catch(() => undefined); // a save under way finishes before the checkpoint is read
    this.averaging = undefined;
    this.generation = generation;
    this.pushes = 0;
    const reshard = at !== undefined && (at.rank !== this.rank || at.worldSize !== this.worldSize);
    if (at) ({ rank: this.rank, worldSize: this.worldSize } = at);
    if (!this.model) await this.build();
    else if (reshard) await this.loadData();
    this.group = joinGroup(`train-${this.c.run}`, { rank: this.rank, worldSize: this.worldSize, generation });
    // Every replica runs the same number of steps per epoch: the smallest shard decides.
    const mine = Math.floor(this.data.x.shape[0] / this.c.batchSize);
    this.stepsPerEpoch = (await this.group.allreduce(Int32Array.of(mine), 'min'))[0];
    if (this.stepsPerEpoch < 1)
      throw new UsageError(`a replica's shard has fewer samples than one batch (${this.c.batchSize})`);
    const saved = await (await checkpoints()).load(jobCheckpoint(`train-${this.c.run}`));
    let pos: Position = { epoch: 0, step: 0 };
    if (saved) {
      const cp = saved.state as Checkpoint;
      this.setWeights(cp.weights);
      await restoreOptimizer(this.optimizer, this.trainable(), cp.optimizer);
      // A smaller group takes more steps per epoch: resume at the same share of the epoch.
      pos = { epoch: cp.epoch, step: Math.floor((cp.step * this.stepsPerEpoch) / cp.stepsPerEpoch) };
    } else {
      this.setWeights(await Promise.all(this.weights().map((w) => this.group!.broadcast(w, 0))));
    }
    if (this.c.mode === 'ps') {
      // Every replica holds the same weights now; the shards take them unless they have their own (a resumed run).
      const flat = await flatten(this.trainable());
      const parts = shardBounds(flat.length, this.c.servers.length);
      await Promise.all(this.c.servers.map((s, k) => s.init(flat.subarray(parts[k], parts[k + 1]))));
      this.setTrainable(concat(await Promise.all(this.c.servers.map((s) => s.pull()))));
    }
    this.globalStep = pos.epoch * this.stepsPerEpoch + pos.step;
    return { ...pos, stepsPerEpoch: this.stepsPerEpoch, backend: tf.getBackend() };
  }

  /** Answers once the replica is up: the trainer asks after a failure which replicas came back. */
  ping(): number {
    return this.rank;
  }

  /** Trains one epoch from `fromStep`: a step is a batch per replica, its gradients averaged over the group. */
  async epoch(epoch: number, fromStep: number): Promise<EpochStats> {
    // Restarted between two epochs: the trainer must treat this as the replica failure it is and set the group up
    // again.
    if (!this.group) throw new CollectiveError(`replica ${this.rank} was restarted and is not in the group yet`);
    const started = Date.now();
    const order = permutation(this.data.x.shape[0], this.c.seed + epoch * 1009 + this.rank);
    let lossSum = 0,
      correct = 0,
      samples = 0,
      syncMs = 0;
    for (let step = fromStep; step < this.stepsPerEpoch; step++) {
      const idx = tf.tensor1d(order.subarray(step * this.c.batchSize, (step + 1) * this.c.batchSize), 'int32');
      const [xb, yb] = [tf.gather(this.data.x, idx), tf.gather(this.data.y, idx)];
      const vars = this.trainable();
      let predicted!: tf.Tensor;
      const { value, grads } = tf.variableGrads(() => {
        predicted = tf.keep(this.model.apply(xb, { training: true }) as tf.Tensor); // for the accuracy below
        return this.loss(yb, predicted);
      }, vars);
      lossSum += (await value.data())[0] * this.c.batchSize;
      correct += await countCorrect(yb, predicted);
      samples += this.c.batchSize;
      const rate = this.spec.learningRate?.({
        replicas: this.c.worldSize,
        mode: this.c.mode,
        epoch,
        epochs: this.c.epochs,
        step,
        stepsPerEpoch: this.stepsPerEpoch,
      });
      if (rate !== undefined && this.c.mode !== 'ps') setLearningRate(this.optimizer, rate);
      if (this.c.mode === 'sync' && this.worldSize === 1) {
        this.optimizer.applyGradients(grads); // nothing to average with
      } else if (this.c.mode === 'sync') {
        const t0 = performance.now();
        const averaged = unflatten(
          await this.group!.allreduce(await flatten(vars.map((v) => grads[v.name])), 'mean'),
          vars,
        );
        syncMs += performance.now() - t0;
        this.optimizer.applyGradients(averaged);
        tf.dispose(Object.values(averaged));
      } else if (this.c.mode === 'ps') {
        const t0 = performance.now();
        const flat = await flatten(vars.map((v) => grads[v.name]));
        const parts = shardBounds(flat.length, this.c.servers.length);
        const step = ++this.pushes;
        const fresh = await Promise.all(
          this.c.servers.map((s, k) =>
            s.push(this.generation, this.rank, step, flat.subarray(parts[k], parts[k + 1]), rate),
          ),
        );
        this.setTrainable(concat(fresh));
        syncMs += performance.now() - t0;
      } else {
        this.optimizer.applyGradients(grads);
      }
      tf.dispose([idx, xb, yb, predicted, value, ...Object.values(grads)]);
      this.globalStep++;
      if (this.c.mode === 'local') {
        const t0 = performance.now();
        const last = step + 1 === this.stepsPerEpoch;
        if (this.averaging) await this.finishAveraging();
        if (this.globalStep % this.c.averageEvery === 0) {
          const from = this.weights();
          const average = this.group!.allreduce(concat(from), 'mean').then((flat) => split(flat, from));
          average.catch(() => undefined); // awaited a step later; an abort() before then must not count as unhandled
          this.averaging = { from, average };
          if (!this.c.delayAveraging || last) await this.finishAveraging();
        } else if (last && this.averaging) await this.finishAveraging();
        syncMs += performance.now() - t0;
      }
      if (this.rank === 0) {
        bus().publish(subjects.trainProgress(this.c.run), { epoch, step: step + 1, of: this.stepsPerEpoch });
        const last = step + 1 === this.stepsPerEpoch;
        if (this.globalStep % this.c.checkpointEvery === 0 || last)
          await this.checkpoint(last ? { epoch: epoch + 1, step: 0 } : { epoch, step: step + 1 });
      }
    }
    await this.saving; // the epoch's last checkpoint is saved when the epoch ends
    return {
      loss: lossSum / samples,
      accuracy: correct / samples,
      samples,
      steps: this.stepsPerEpoch - fromStep,
      ms: Date.now() - started,
      syncMs: Math.round(syncMs),
    };
  }

  /** Loss and accuracy on the job's test data. */
  async evaluate(): Promise<{ loss: number; accuracy: number; samples: number }> {
    const test = this.data.test;
    if (!test) throw new UsageError('the training job gives no test data');
    const p = this.model.predict(test.x) as tf.Tensor;
    const loss = this.loss(test.y, p);
    const result = {
      loss: (await loss.data())[0],
      accuracy: (await countCorrect(test.y, p)) / test.x.shape[0],
      samples: test.x.shape[0],
    };
    tf.dispose([p, loss]);
    return result;
  }

  /** The model's weights, in the order of model.getWeights(). */
  getWeights(): Float32Array[] {
    return this.weights();
  }

  /** Stops waiting in a collective (a member died): the current epoch call fails at once instead of timing out. */
  abort(): void {
    this.group?.leave();
  }

  private async build(): Promise<void> {
    this.spec = await loadSpec<TrainingJobSpec>(this.c.job, 'trainingJob()');
    // The seed fixes the first weights too (rank 0's, which every replica takes): layer initializers draw from
    // Math.random when given no seed of their own. Dropout masks, drawn while training, are not fixed.
    this.model = (await withSeededMathRandom(this.c.seed, () => this.spec.model())) as LayersModel;
    this.optimizer = await this.spec.optimizer({ replicas: this.c.worldSize, mode: this.c.mode });
    await this.loadData();
  }

  private async loadData(): Promise<void> {
    if (this.data)
      tf.dispose([this.data.x, this.data.y, ...(this.data.test ? [this.data.test.x, this.data.test.y] : [])]);
    this.data = await this.spec.data({ rank: this.rank, worldSize: this.worldSize });
    if (this.data.x.shape[0] !== this.data.y.shape[0])
      throw new UsageError(`data: x has ${this.data.x.shape[0]} samples, y ${this.data.y.shape[0]}`);
  }

  /** Takes the average that was on its way, keeping what this replica learned since it started: avg + (now - from). */
  private async finishAveraging(): Promise<void> {
    const { from, average } = this.averaging!;
    this.averaging = undefined;
    const avg = await average;
    if (!this.c.delayAveraging) return this.setWeights(avg);
    const now = this.weights();
    this.setWeights(avg.map((a, i) => a.map((v, k) => v + now[i][k] - from[i][k])));
  }

  private loss(y: tf.Tensor, p: tf.Tensor): tf.Scalar {
    if (this.spec.loss) return this.spec.loss(y, p);
    return tf.tidy(() => tf.neg(tf.mean(tf.sum(tf.mul(y, tf.log(tf.clipByValue(p, 1e-7, 1))), -1))) as tf.Scalar);
  }

  /** Copies: some backends hand out the array the tensor itself uses. */
  private weights(): Float32Array[] {
    return this.model.getWeights().map((w) => (w.dataSync() as Float32Array).slice());
  }

  private setWeights(values: Float32Array[]): void {
    const now = this.model.getWeights();
    const next = values.map((v, i) => tf.tensor(v, now[i].shape));
    this.model.setWeights(next);
    tf.dispose(next);
  }

  private trainable(): tf.Variable[] {
    return this.model.trainableWeights.map((w) => w.read() as tf.Variable);
  }

  private setTrainable(flat: Float32Array): void {
    let at = 0;
    for (const v of this.trainable()) {
      const t = tf.tensor(flat.subarray(at, (at += v.size)), v.shape);
      v.assign(t);
      t.dispose();
    }
  }

  /** Takes the state now and saves it while training goes on: one save at a time, in order. A failed save fails the
   * next checkpoint or the epoch's end. */
  private async checkpoint(at: Position): Promise<void> {
    const optimizer = await optimizerState(this.optimizer);
    const state: Checkpoint = { ...at, weights: this.weights(), optimizer, stepsPerEpoch: this.stepsPerEpoch };
    await this.saving;
    const saving = checkpoints().then((c) => c.save(jobCheckpoint(`train-${this.c.run}`), state));
    saving.catch(() => undefined); // awaited later: not an unhandled rejection meanwhile
    this.saving = saving;
  }
}

/** A shuffled 0..n-1, the same for the same seed. */
function permutation(n: number, seed: number): Int32Array {
  const p = Int32Array.from({ length: n }, (_, i) => i);
  let s = seed >>> 0 || 1;
  for (let i = n - 1; i > 0; i--) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const j = s % (i + 1);
    [p[i], p[j]] = [p[j], p[i]];
  }
  return p;
}

/** Samples whose largest predicted class is the labelled one (one-hot labels). */
async function countCorrect(y: tf.Tensor, p: tf.Tensor): Promise<number> {
  const hits = tf.tidy(() => tf.sum(tf.cast(tf.equal(tf.argMax(y, -1), tf.argMax(p, -1)), 'int32')));
  const n = (await hits.data())[0];
  hits.dispose();
  return n;
}

async function flatten(ts: tf.Tensor[]): Promise<Float32Array> {
  const out = new Float32Array(ts.reduce((n, t) => n + t.size, 0));
  let at = 0;
  for (const t of ts) {
    out.set((await t.data()) as Float32Array, at);
    at += t.size;
  }
  return out;
}

/** Where each of `n` shards' slices of `length` values begins (and, last, the end). */
function shardBounds(length: number, n: number): number[] {
  return Array.from({ length: n + 1 }, (_, k) => Math.round((k * length) / n));
}

function concat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** `flat` cut into arrays of the lengths of `like`'s. */
function split(flat: Float32Array, like: Float32Array[]): Float32Array[] {
  let at = 0;
  return like.map((l) => flat.slice(at, (at += l.length)));
}

function unflatten(flat: Float32Array, like: tf.Variable[]): tf.NamedTensorMap {
  const out: tf.NamedTensorMap = {};
  let at = 0;
  for (const v of like) {
    out[v.name] = tf.tensor(flat.subarray(at, at + v.size), v.shape);
    at += v.size;
  }
  return out;
}

libraryActor(Replica, import.meta.url);
