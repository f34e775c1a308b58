// What a training run trains: a model, its optimizer and loss, and each replica's shard of the data. Defined at the
// top level of a module and exported, like remote functions, so that replicas on any node can load it.
import type { Tensor, Scalar, Optimizer } from '@tensorflow/tfjs-core';
import type { LayersModelLike } from '../library/layers-model.ts';
import { declareSpec, type ExportedSpec } from '../library/exported-spec.ts';
import { UsageError } from '../library/runtime.ts';

/** A replica's training data, and optionally the data to test on (rank 0 evaluates it after each epoch). */
export interface TrainingData {
  x: Tensor;
  /** One-hot labels for the built-in loss and accuracy. */
  y: Tensor;
  test?: { x: Tensor; y: Tensor };
}

/** How replicas combine what they learn (see train()). */
export type TrainingMode = 'sync' | 'local' | 'ps';

/** What an optimizer is built for. In 'sync' mode a step averages the gradients of `replicas` batches: a job may
 * scale its learning rate with that (linearly for SGD, by the square root for Adam, as Horovod advises). */
export interface OptimizerContext {
  /** Replicas the run started with (an elastic run that loses some keeps its optimizers). */
  replicas: number;
  mode: TrainingMode;
}

/** Where a run is when its next step is taken, for a learning-rate schedule. */
export interface ScheduleContext extends OptimizerContext {
  /** 0-based. */
  epoch: number;
  epochs: number;
  /** Steps already taken in this epoch (0-based index of the next one). */
  step: number;
  stepsPerEpoch: number;
}

export interface TrainingJobSpec {
  /** A fresh model; replicas start from rank 0's weights. */
  model(): LayersModelLike | Promise<LayersModelLike>;
  optimizer(run: OptimizerContext): Optimizer | Promise<Optimizer>;
  /** This replica's shard: give each rank different samples. */
  data(shard: { rank: number; worldSize: number }): TrainingData | Promise<TrainingData>;
  /** The learning rate of the next step (a decay over the run, a warm-up), set on the optimizer before each step.
   * A function of where the run is, so a resumed run goes on with the rate it had. Default: the rate the optimizer
   * was built with, throughout. */
  learningRate?(at: ScheduleContext): number;
  /** Mean loss of a batch; default: categorical cross-entropy on probabilities (a softmax output). */
  loss?(y: Tensor, predicted: Tensor): Scalar;
}

export type TrainingJob = ExportedSpec<TrainingJobSpec>;

/** Declares a training job. Export the result from its module (not from the script that calls init()). */
export function trainingJob(spec: TrainingJobSpec): TrainingJob {
  for (const k of ['model', 'optimizer', 'data'] as const) {
    if (typeof spec?.[k] !== 'function') throw new UsageError(`trainingJob(): '${k}' must be a function`);
  }
  for (const k of ['learningRate', 'loss'] as const) {
    if (spec[k] !== undefined && typeof spec[k] !== 'function')
      throw new UsageError(`trainingJob(): '${k}' must be a function`);
  }
  return declareSpec(spec, 'the training job');
}
