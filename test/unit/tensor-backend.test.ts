// Backend choice, best first, skipping what does not load; and the conv2d weight gradient troupe adds to wasm,
// checked against the pure-JS backend.
import test from 'ava';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-layers'; // registers every op's gradient
import { pick, BACKENDS, describeBackend } from '../../runtime/tensor/backend.ts';

test.serial('the first candidate that loads wins; the ones skipped say why', async (t) => {
  const candidates = [
    BACKENDS[0], // tfjs-node-gpu: needs a GPU
    { backend: 'tensorflow' as const, pkg: '@tensorflow/no-such-backend' },
    ...BACKENDS.slice(2), // wasm, cpu
  ];
  const c = await pick({ gpu: false, candidates });
  t.is(c.backend, 'wasm');
  t.is(tf.getBackend(), 'wasm');
  t.deepEqual(c.skipped, [
    { pkg: '@tensorflow/tfjs-node-gpu', why: 'no GPU given to this process' },
    { pkg: '@tensorflow/no-such-backend', why: 'not installed' },
  ]);
  t.is(describeBackend(c), 'wasm (@tensorflow/no-such-backend: not installed)');
  t.is((await pick({ candidates, startAt: 'cpu' })).backend, 'cpu');
  await t.throwsAsync(pick({ candidates, startAt: 'webgpu' }), {
    message: /TROUPE_TENSOR_BACKEND=webgpu names no backend/,
  });
});

test.serial('conv2d weight gradients on wasm match the cpu backend (strides, padding)', async (t) => {
  const xData = tf.randomNormal([3, 9, 8, 2], 0, 1, 'float32', 1).dataSync();
  const wData = tf.randomNormal([3, 2, 2, 4], 0, 1, 'float32', 2).dataSync();
  // (Numeric padding is left out: tfjs-backend-wasm 4.22's own Conv2DBackpropInput corrupts its memory with it.)
  const cases: Array<[number | [number, number], 'valid' | 'same']> = [
    [1, 'valid'],
    [1, 'same'],
    [2, 'same'],
    [[2, 1], 'valid'],
  ];
  for (const [strides, pad] of cases) {
    const grad = async (backend: string) => {
      await tf.setBackend(backend);
      const x = tf.tensor4d(xData, [3, 9, 8, 2]);
      const g = tf.grad((f) => tf.sum(tf.square(tf.conv2d(x, f as tf.Tensor4D, strides, pad))))(
        tf.tensor4d(wData, [3, 2, 2, 4]),
      );
      return Array.from(await g.data());
    };
    await pick({ candidates: BACKENDS.slice(2, 3) }); // wasm, with the gradient registered
    const onWasm = await grad('wasm');
    const onCpu = await grad('cpu');
    t.is(onWasm.length, onCpu.length);
    const worst = Math.max(...onWasm.map((v, i) => Math.abs(v - onCpu[i]) / (1 + Math.abs(onCpu[i]))));
    t.true(worst < 1e-4, `strides ${strides}, ${pad}: off by ${worst}`);
  }
});
