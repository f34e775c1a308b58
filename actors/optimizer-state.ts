// An optimizer's state (Adam's moments and the like) as plain arrays, for checkpoints, and back.
import * as tf from '@tensorflow/tfjs-core';

export async function optimizerState(optimizer: tf.Optimizer): Promise<Float32Array[]> {
  return Promise.all((await optimizer.getWeights()).map(async (s) => (await s.tensor.data()) as Float32Array));
}

/** Puts saved state back into an optimizer of `vars`. */
export async function restoreOptimizer(optimizer: tf.Optimizer, vars: tf.Variable[], values: Float32Array[]): Promise<void> {
  if (!values.length) return;
  if ((await optimizer.getWeights()).length === 0) {
    // Slots exist only after a first update: make them with a zero step, then overwrite.
    optimizer.applyGradients(Object.fromEntries(vars.map((v) => [v.name, tf.zerosLike(v)])));
  }
  const slots = await optimizer.getWeights();
  await optimizer.setWeights(slots.map((s, i) => ({ name: s.name, tensor: tf.tensor(values[i], s.tensor.shape) })));
}
