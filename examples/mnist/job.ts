// The MNIST job: 10,000 real digits from the `mnist` package, shuffled the same way every time, 8,000 to train on
// (split across replicas) and 2,000 to test on. A small CNN: on the wasm backend troupe supplies the conv weight
// gradient tfjs lacks there.
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { trainingJob } from 'troupe';

const TRAIN = 8000;

interface Digit { length: number; get(i: number): number[] }

/** Every digit as 784 values in [0, 1] with its label, in a fixed shuffled order. */
function loadDigits(): { x: Float32Array; labels: Uint8Array; count: number } {
  const mnist = createRequire(import.meta.url)('mnist') as Record<number, Digit>;
  const all: Array<[number, number]> = [];
  for (let d = 0; d < 10; d++) for (let i = 0; i < mnist[d].length; i++) all.push([d, i]);
  let s = 42;
  for (let i = all.length - 1; i > 0; i--) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const j = s % (i + 1);
    [all[i], all[j]] = [all[j], all[i]];
  }
  const x = new Float32Array(all.length * 784);
  const labels = new Uint8Array(all.length);
  all.forEach(([d, i], n) => { x.set(mnist[d].get(i), n * 784); labels[n] = d; });
  return { x, labels, count: all.length };
}

function tensors(x: Float32Array, labels: Uint8Array, rows: number[]): { x: tf.Tensor; y: tf.Tensor } {
  const xs = new Float32Array(rows.length * 784);
  rows.forEach((r, n) => xs.set(x.subarray(r * 784, (r + 1) * 784), n * 784));
  const ys = tf.oneHot(tf.tensor1d(rows.map((r) => labels[r]), 'int32'), 10);
  return { x: tf.tensor4d(xs, [rows.length, 28, 28, 1]), y: ys };
}

export const mnistJob = trainingJob({
  model: () => tfl.sequential({
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
  optimizer: () => tf.train.adam(0.002),
  data: ({ rank, worldSize }) => {
    const { x, labels, count } = loadDigits();
    const mine = Array.from({ length: TRAIN }, (_, i) => i).filter((i) => i % worldSize === rank);
    const test = rank === 0 ? tensors(x, labels, Array.from({ length: count - TRAIN }, (_, i) => TRAIN + i)) : undefined;
    return { ...tensors(x, labels, mine), test };
  },
});
