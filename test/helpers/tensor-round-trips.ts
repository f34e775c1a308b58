// The tensor codec's round trips, registered once per backend: the cpu backend in codec.test.ts, the native
// tensorflow backend in codec-tensorflow.test.ts (decoded tensors are made on whichever backend is active).
import type { ExecutionContext, TestFn } from 'ava';
import * as tf from '@tensorflow/tfjs-core';
import { encode, decode } from '../../runtime/base/codec.ts';

const roundTrip = <T>(value: T): T => decode<T>(encode(value));
const bytesOf = (a: ArrayBufferView): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

function assertSameTensor(t: ExecutionContext, actual: unknown, expected: tf.Tensor): void {
  t.true(actual instanceof tf.Tensor);
  const a = actual as tf.Tensor;
  t.is(a.dtype, expected.dtype);
  t.deepEqual(a.shape, expected.shape);
  t.deepEqual(a.arraySync(), expected.arraySync());
  const data = a.dataSync(),
    want = expected.dataSync();
  if (ArrayBuffer.isView(want)) t.deepEqual(bytesOf(data as ArrayBufferView), bytesOf(want));
  else t.deepEqual(data, want);
}

const tensors: Array<[string, () => tf.Tensor]> = [
  ['float32 [2,3,4]', () => tf.randomNormal([2, 3, 4], 0, 1, 'float32', 42)],
  ['float32 special values', () => tf.tensor1d([NaN, -0, Infinity, 1e-45])],
  ['float32 scalar', () => tf.scalar(3.25)],
  [
    'int32',
    () =>
      tf.tensor2d(
        [
          [1, -2],
          [2147483647, -2147483648],
        ],
        [2, 2],
        'int32',
      ),
  ],
  ['bool', () => tf.tensor1d([true, false, true], 'bool')],
  ['string', () => tf.tensor1d(['a', 'héllo', ''], 'string')],
  [
    'complex64',
    () =>
      tf.complex(
        [
          [1, 2],
          [0, -1],
        ],
        [
          [3, -4],
          [0.5, 0],
        ],
      ),
  ],
];
/** Registers the round trips on `backend`, which the caller has registered (imported its package). */
export function tensorRoundTrips(test: TestFn, backend: 'cpu' | 'tensorflow'): void {
  test.before(async () => {
    if (!(await tf.setBackend(backend))) throw new Error(`the ${backend} backend did not initialize`);
    if (tf.getBackend() !== backend) throw new Error(`backend ${tf.getBackend()} is active, not ${backend}`);
  });
  for (const [label, make] of tensors) {
    test(`${backend}: tensor ${label} round-trips`, (t) => {
      const x = make();
      const back = roundTrip(x);
      assertSameTensor(t, back, x);
      if (x.dtype === 'complex64') {
        t.deepEqual(tf.real(back).arraySync(), tf.real(x).arraySync());
        t.deepEqual(tf.imag(back).arraySync(), tf.imag(x).arraySync());
      }
    });
  }

  test(`${backend}: a tensor nested in an object round-trips`, (t) => {
    const value = {
      step: 3,
      w: tf.tensor2d([
        [1, 2],
        [3, 4],
      ]),
    };
    const back = roundTrip(value);
    t.is(back.step, 3);
    assertSameTensor(t, back.w, value.w);
  });

  test(`${backend}: a disposed tensor fails to encode`, (t) => {
    const x = tf.scalar(1);
    x.dispose();
    t.throws(() => encode({ x }), { message: /disposed/ });
  });
}
