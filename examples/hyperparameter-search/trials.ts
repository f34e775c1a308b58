// The trial: trains a small MLP on part of MNIST with one config and reports its test accuracy. Workers import this
// module by URL; importing tfjs here makes each worker choose its backend (wasm where tfjs-node is missing).
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { remote } from 'troupe';
import { loadDigits, TRAIN, PIXELS } from '../mnist/digits.ts';

export interface TrialConfig {
  learningRate: number;
  hidden: number;
  batchSize: number;
  epochs: number;
}

/** Trials train on part of the demo's training set (a quick signal is what a search needs) and test on all its test
 * set. */
const SUBSET = 6000;

function split(): { train: { x: tf.Tensor; y: tf.Tensor }; test: { x: tf.Tensor; y: tf.Tensor } } {
  const { x, labels, count } = loadDigits();
  const part = (from: number, to: number) => ({
    x: tf.tensor2d(x.subarray(from * PIXELS, to * PIXELS), [to - from, PIXELS]),
    y: tf.oneHot(tf.tensor1d(Int32Array.from(labels.subarray(from, to)), 'int32'), 10),
  });
  return { train: part(0, SUBSET), test: part(TRAIN, count) };
}

// Once per worker process: the next trial on the same worker reuses the tensors.
let data: ReturnType<typeof split> | undefined;

export const trainMlp = remote({ numCpus: 1 }, async (c: TrialConfig) => {
  data ??= split();
  const started = performance.now();
  const model = tfl.sequential({
    layers: [
      tfl.layers.dense({ inputShape: [PIXELS], units: c.hidden, activation: 'relu' }),
      tfl.layers.dense({ units: 10, activation: 'softmax' }),
    ],
  });
  model.compile({ optimizer: tf.train.adam(c.learningRate), loss: 'categoricalCrossentropy', metrics: ['accuracy'] });
  await model.fit(data.train.x, data.train.y, { epochs: c.epochs, batchSize: c.batchSize, shuffle: true, verbose: 0 });
  const [loss, accuracy] = await Promise.all(
    (model.evaluate(data.test.x, data.test.y) as tf.Scalar[]).map(async (s) => (await s.data())[0]),
  );
  model.dispose();
  return { accuracy, loss, trainSeconds: (performance.now() - started) / 1000, backend: tf.getBackend() };
});
