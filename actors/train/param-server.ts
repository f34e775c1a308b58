// One shard of a parameter server: it holds a contiguous slice of a model's trainable parameters and their optimizer,
// applies each replica's gradient as it comes (asynchronous SGD), and hands back the new values once no replica is
// more than `staleness` steps behind the pusher (bounded staleness, as in stale synchronous parallel).
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-layers'; // registers the gradient of every op the optimizer may use
import { Actor, type ActorLifecycle } from '../actor.ts';
import { CollectiveError } from '../collective/collective.ts';
import { optimizerState, restoreOptimizer, setLearningRate } from './optimizer-state.ts';
import type { TrainingJobSpec } from './training-job.ts';
import { loadSpec, type SpecRef } from '../library/exported-spec.ts';
import { UsageError, libraryActor } from '../library/runtime.ts';

export interface ParamServerConfig {
  job: SpecRef;
  run: string;
  shard: number;
  /** How many steps a replica may be ahead of the slowest one. */
  staleness: number;
  /** Replicas the run started with (for the job's optimizer()). */
  replicas: number;
}

interface Saved {
  values: Float32Array;
  optimizer: Float32Array[];
  updates: number;
}
interface Waiter {
  step: number;
  resolve(): void;
  reject(e: Error): void;
}

export class ParamServer extends Actor implements ActorLifecycle<Saved | undefined> {
  private optimizer!: tf.Optimizer;
  private variable?: tf.Variable;
  private saved?: Saved;
  /** Pushes per replica rank in this generation. */
  private clocks: number[] = [];
  private waiters: Waiter[] = [];
  private generation = -1;
  private updates = 0;
  private maxLead = 0;

  constructor(private readonly c: ParamServerConfig) {
    super();
  }

  async onStart(): Promise<void> {
    const spec = await loadSpec<TrainingJobSpec>(this.c.job, 'trainingJob()');
    this.optimizer = await spec.optimizer({ replicas: this.c.replicas, mode: 'ps' });
    if (this.saved) {
      this.variable = tf.variable(tf.tensor1d(this.saved.values), true, `ps-${this.c.run}-${this.c.shard}`);
      await restoreOptimizer(this.optimizer, [this.variable!], this.saved.optimizer);
      this.updates = this.saved.updates;
    }
  }

  restore(s: Saved | undefined): void {
    this.saved = s;
  }

  async checkpoint(): Promise<Saved | undefined> {
    if (!this.variable) return undefined;
    return { values: this.current(), optimizer: await optimizerState(this.optimizer), updates: this.updates };
  }

  /** Gives the shard its first values, unless it has some (a run that resumes keeps what the shard learned). */
  async init(values: Float32Array): Promise<void> {
    if (this.variable) return;
    this.variable = tf.variable(tf.tensor1d(values), true, `ps-${this.c.run}-${this.c.shard}`);
    await this.saveCheckpoint(); // a shard that dies before its next checkpoint comes back with these values
  }

  /** Starts a generation of `worldSize` replicas, all at step 0 of it; pushes still waiting from the last one fail. */
  reset(generation: number, worldSize: number): void {
    this.generation = generation;
    this.clocks = new Array<number>(worldSize).fill(0);
    for (const w of this.waiters.splice(0))
      w.reject(
        new CollectiveError(`parameter server shard ${this.c.shard}: the group re-formed (generation ${generation})`),
      );
  }

  /** Applies replica `rank`'s gradient for its `step`-th step of this generation (at `learningRate`, when the job has a
   * schedule); returns the shard's values once the slowest replica is at most `staleness` steps behind. */
  async push(
    generation: number,
    rank: number,
    step: number,
    gradient: Float32Array,
    learningRate?: number,
  ): Promise<Float32Array> {
    if (generation !== this.generation)
      throw new CollectiveError(
        `parameter server shard ${this.c.shard}: a push of generation ${generation}, now ${this.generation}`,
      );
    if (!this.variable) throw new UsageError(`parameter server shard ${this.c.shard} has no values yet: init() first`);
    if (gradient.length !== this.variable.size)
      throw new UsageError(`a gradient of ${gradient.length} values for a shard of ${this.variable.size}`);
    if (learningRate !== undefined) setLearningRate(this.optimizer, learningRate);
    const g = tf.tensor1d(gradient);
    this.optimizer.applyGradients({ [this.variable.name]: g });
    g.dispose();
    this.updates++;
    this.clocks[rank] = step;
    const slowest = Math.min(...this.clocks);
    for (const w of this.waiters.filter((x) => slowest >= x.step - this.c.staleness)) {
      this.waiters.splice(this.waiters.indexOf(w), 1);
      w.resolve();
    }
    if (slowest < step - this.c.staleness)
      await new Promise<void>((resolve, reject) => this.waiters.push({ step, resolve, reject }));
    this.maxLead = Math.max(this.maxLead, step - Math.min(...this.clocks));
    return this.current();
  }

  /** Updates applied, and the most steps a replica was ahead of the slowest one when its push returned. */
  stats(): { updates: number; maxLead: number } {
    return { updates: this.updates, maxLead: this.maxLead };
  }

  /** The shard's values now. */
  pull(): Float32Array {
    if (!this.variable) throw new UsageError(`parameter server shard ${this.c.shard} has no values yet: init() first`);
    return this.current();
  }

  private current(): Float32Array {
    return (this.variable!.dataSync() as Float32Array).slice();
  }
}

libraryActor(ParamServer, import.meta.url);
