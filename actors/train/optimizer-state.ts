// An optimizer's state (Adam's moments and the like) as plain arrays, for checkpoints, and back; its learning rate.
import * as tf from '@tensorflow/tfjs-core';
import { UsageError } from '../library/runtime.ts';

export async function optimizerState(optimizer: tf.Optimizer): Promise<Float32Array[]> {
  return Promise.all((await optimizer.getWeights()).map(async (s) => (await s.tensor.data()) as Float32Array));
}

/** Puts saved state back into an optimizer of `vars`. */
export async function restoreOptimizer(
  optimizer: tf.Optimizer,
  vars: tf.Variable[],
  values: Float32Array[],
): Promise<void> {
  if (!values.length) return;
  if ((await optimizer.getWeights()).length === 0) {
    // Slots exist only after a first update: make them with a zero step, then overwrite.
    optimizer.applyGradients(Object.fromEntries(vars.map((v) => [v.name, tf.zerosLike(v)])));
  }
  const slots = await optimizer.getWeights();
  await optimizer.setWeights(slots.map((s, i) => ({ name: s.name, tensor: tf.tensor(values[i], s.tensor.shape) })));
}

/** Sets the rate the optimizer's next update uses. Every tf.train optimizer reads its `learningRate` at each update,
 * except SGD and momentum, which keep it as a tensor and have a setter for it. */
export function setLearningRate(optimizer: tf.Optimizer, rate: number): void {
  if (!Number.isFinite(rate) || rate < 0)
    throw new UsageError(`the training job's learningRate() must return a number >= 0, got ${rate}`);
  const o = optimizer as unknown as { learningRate?: unknown; setLearningRate?(rate: number): void };
  if (o.learningRate === rate) return;
  if (typeof o.setLearningRate === 'function') o.setLearningRate(rate);
  else if (typeof o.learningRate === 'number') o.learningRate = rate;
  else
    throw new UsageError(
      `the training job has a learningRate() but its optimizer (${optimizer.getClassName()}) has no learning rate to ` +
        `set`,
    );
}
