// What a training run trains: a model, its optimizer and loss, and each replica's shard of the data. Defined at the
// top level of a module and exported, like remote functions, so that replicas on any node can load it.
import type { Tensor, Scalar, Optimizer } from '@tensorflow/tfjs-core';
import type { LayersModel } from '@tensorflow/tfjs-layers';
import { defineSite, type Definition } from '../runtime/definition-site.ts';
import { UsageError } from '../runtime/errors.ts';

/** A replica's training data, and optionally the data to test on (rank 0 evaluates it after each epoch). */
export interface TrainingData {
  x: Tensor;
  /** One-hot labels for the built-in loss and accuracy. */
  y: Tensor;
  test?: { x: Tensor; y: Tensor };
}

export interface TrainingJobSpec {
  /** A fresh model; replicas start from rank 0's weights. */
  model(): LayersModel | Promise<LayersModel>;
  optimizer(): Optimizer | Promise<Optimizer>;
  /** This replica's shard: give each rank different samples. */
  data(shard: { rank: number; worldSize: number }): TrainingData | Promise<TrainingData>;
  /** Mean loss of a batch; default: categorical cross-entropy on probabilities (a softmax output). */
  loss?(y: Tensor, predicted: Tensor): Scalar;
}

export interface TrainingJob {
  readonly spec: TrainingJobSpec;
  /** Where replicas load it from. */
  readonly def: Definition;
}

/** Declares a training job. Export the result from its module (not from the script that calls init()). */
export function trainingJob(spec: TrainingJobSpec): TrainingJob {
  for (const k of ['model', 'optimizer', 'data'] as const) {
    if (typeof spec?.[k] !== 'function') throw new TypeError(`trainingJob(): '${k}' must be a function`);
  }
  const job = { spec } as { spec: TrainingJobSpec; def: Definition };
  Object.defineProperty(job, 'def', { value: defineSite(job), enumerable: false });
  return job;
}

/** Where replicas import the job from, once its module has finished loading. */
export async function jobRef(job: TrainingJob): Promise<{ url: string; exportName: string }> {
  if (!job?.spec || !job.def) throw new TypeError('train() takes a trainingJob(...)');
  const exportName = job.def.exportName ?? (await job.def.lookup);
  if (exportName === undefined) throw new UsageError(`the training job defined in ${job.def.url} is not an export of that module: export it`);
  return { url: job.def.url, exportName };
}
