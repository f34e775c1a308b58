// One replica of an inference pool: an actor that loads the model once and answers predict() calls, batching those
// that arrive together (the pool lets up to maxOngoing of them in at a time). Loaded only in the worker processes
// that serve, so drivers never load tfjs for it.
import * as tf from '@tensorflow/tfjs-core';
import type { LayersModel } from '@tensorflow/tfjs-layers';
import { Actor } from '../actor.ts';
import { Batcher, type BatchRecord } from './batcher.ts';
import type { InferenceModelSpec } from './inference-model.ts';
import { loadSpec, type SpecRef } from '../library/exported-spec.ts';
import { UsageError, libraryActor } from '../library/runtime.ts';

export interface InferenceReplicaConfig {
  model: SpecRef;
  maxBatchSize: number;
  maxWaitMs: number;
}

export interface ReplicaStats {
  requests: number;
  batches: number;
  /** The latest batches (up to 100), oldest first. */
  recent: BatchRecord[];
  backend: string;
}

export type Sample = Float32Array | number[];

export class InferenceReplica extends Actor {
  private spec!: InferenceModelSpec;
  private model!: LayersModel;
  private sampleSize = 0;
  private readonly batcher: Batcher<Float32Array, Float32Array>;

  constructor(private readonly c: InferenceReplicaConfig) {
    super();
    this.batcher = new Batcher(c.maxBatchSize, c.maxWaitMs, (inputs) => this.runBatch(inputs));
  }

  async onStart(): Promise<void> {
    this.spec = await loadSpec<InferenceModelSpec>(this.c.model, 'inferenceModel()');
    this.sampleSize = this.spec.inputShape.reduce((a, b) => a * b, 1);
    this.model = (await this.spec.model()) as LayersModel;
    // The first run of a model compiles its kernels: pay for it here, not in a request.
    tf.dispose(this.forward(tf.zeros([1, ...this.spec.inputShape])));
  }

  /** Answers once the model is loaded (the pool routes requests to a replica only after that). */
  ready(): string {
    return tf.getBackend();
  }

  /** The model's outputs for `count` inputs of inputShape, packed one after another in `inputs`, and packed the same
   * way in the answer: one typed array each way instead of one per request. The pool sends the requests it has at
   * once in one call; each goes into the batcher on its own, so requests from several calls and callers share batches.
   */
  async predict(inputs: Float32Array, count: number): Promise<Float32Array> {
    if (
      !(inputs instanceof Float32Array) ||
      !Number.isInteger(count) ||
      count < 1 ||
      inputs.length !== count * this.sampleSize
    ) {
      throw new UsageError(
        `predict() takes ${count} inputs of shape [${this.spec.inputShape}] packed in one Float32Array (${count} × ` +
          `${this.sampleSize} numbers), got ${describe(inputs)}`,
      );
    }
    const outs = await Promise.all(
      Array.from({ length: count }, (_, i) =>
        this.batcher.submit(inputs.subarray(i * this.sampleSize, (i + 1) * this.sampleSize)),
      ),
    );
    const packed = new Float32Array(outs.reduce((n, o) => n + o.length, 0));
    let at = 0;
    for (const o of outs) {
      packed.set(o, at);
      at += o.length;
    }
    return packed;
  }

  stats(): ReplicaStats {
    return {
      requests: this.batcher.requests,
      batches: this.batcher.batches,
      recent: this.batcher.history,
      backend: tf.getBackend(),
    };
  }

  private runBatch(inputs: Float32Array[]): Float32Array[] {
    const flat = new Float32Array(inputs.length * this.sampleSize);
    inputs.forEach((x, i) => flat.set(x, i * this.sampleSize));
    const x = tf.tensor(flat, [inputs.length, ...this.spec.inputShape]);
    const y = this.forward(x);
    const out = y.dataSync() as Float32Array;
    tf.dispose([x, y]);
    const per = out.length / inputs.length;
    return inputs.map((_, i) => out.subarray(i * per, (i + 1) * per));
  }

  private forward(batch: tf.Tensor): tf.Tensor {
    return tf.tidy(() =>
      this.spec.predict ? this.spec.predict(this.model, batch) : (this.model.predict(batch) as tf.Tensor),
    );
  }
}

function describe(v: unknown): string {
  if (v && typeof v === 'object' && 'length' in v)
    return `${(v as object).constructor.name} of length ${(v as { length: number }).length}`;
  return typeof v;
}

libraryActor(InferenceReplica, import.meta.url);
