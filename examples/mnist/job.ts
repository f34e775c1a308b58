// The MNIST job: 10,000 real digits from the `mnist` package, shuffled the same way every time, 8,000 to train on
// (split across replicas) and 2,000 to test on. A small CNN: on the wasm backend troupe supplies the conv weight
// gradient tfjs lacks there.
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { trainingJob, type OptimizerContext } from 'troupe';
import { loadDigits } from './digits.ts';

// MNIST_SAMPLES keeps only the first that many digits, 4 in 5 to train (npm run bench --smoke sets it small).
const SAMPLES = Math.min(10_000, Number(process.env.MNIST_SAMPLES) || 10_000);
const TRAIN = Math.round(SAMPLES * 0.8);

/** Adam's first rate. A synchronous step averages the batches of every replica: a larger batch, so a larger step
 * (√replicas for Adam, as Horovod advises). Two replicas then need about as many epochs as one. */
const firstRate = ({ replicas, mode }: OptimizerContext) => 0.002 * (mode === 'sync' ? Math.sqrt(replicas) : 1);

function tensors(x: Float32Array, labels: Uint8Array, rows: number[]): { x: tf.Tensor; y: tf.Tensor } {
  const xs = new Float32Array(rows.length * 784);
  rows.forEach((r, n) => xs.set(x.subarray(r * 784, (r + 1) * 784), n * 784));
  const ys = tf.oneHot(
    tf.tensor1d(
      rows.map((r) => labels[r]),
      'int32',
    ),
    10,
  );
  return { x: tf.tensor4d(xs, [rows.length, 28, 28, 1]), y: ys };
}

export const mnistJob = trainingJob({
  model: () =>
    tfl.sequential({
      layers: [
        tfl.layers.conv2d({ inputShape: [28, 28, 1], filters: 8, kernelSize: 5, activation: 'relu' }),
        tfl.layers.maxPooling2d({ poolSize: 2 }),
        tfl.layers.conv2d({ filters: 16, kernelSize: 5, activation: 'relu' }),
        tfl.layers.maxPooling2d({ poolSize: 2 }),
        tfl.layers.flatten(),
        tfl.layers.dense({ units: 64, activation: 'relu' }),
        tfl.layers.dropout({ rate: 0.25 }),
        tfl.layers.dense({ units: 10, activation: 'softmax' }),
      ],
    }),
  optimizer: (run) => tf.train.adam(firstRate(run)),
  // Cosine decay to a tenth over the run: the last epochs settle instead of bouncing with the latest batches, so the
  // final accuracy is that of the run, not of its last few steps.
  learningRate: (at) => {
    const done = (at.epoch + at.step / at.stepsPerEpoch) / at.epochs;
    return firstRate(at) * (0.1 + 0.45 * (1 + Math.cos(Math.PI * done)));
  },
  data: ({ rank, worldSize }) => {
    const { x, labels, count } = loadDigits();
    const mine = Array.from({ length: TRAIN }, (_, i) => i).filter((i) => i % worldSize === rank);
    const test =
      rank === 0
        ? tensors(
            x,
            labels,
            Array.from({ length: Math.min(count, SAMPLES) - TRAIN }, (_, i) => TRAIN + i),
          )
        : undefined;
    return { ...tensors(x, labels, mine), test };
  },
});
