// The native tensorflow backend where `npm run setup:tensorflow` has built it (CI runs it first): troupe chooses it
// first, and the tensor codec round-trips on it. Where it is not set up, troupe chooses wasm and says why.
import test from 'ava';
import * as tf from '@tensorflow/tfjs-core';
import { chooseBackend, tensorflowThreads } from '../../runtime/tensor/backend.ts';
import { nativeInstalled, warnNoNative } from '../helpers/backend.ts';
import { tensorRoundTrips } from '../helpers/tensor-round-trips.ts';

delete process.env.TROUPE_TENSOR_BACKEND;
tensorflowThreads(1); // as a worker given one CPU would; set before TensorFlow loads

if (nativeInstalled()) {
  const native = '@tensorflow/tfjs-node'; // not a literal: typechecked without it installed
  await import(native); // registered before the round trips' before() makes it the active backend
  test.serial('troupe chooses the native tensorflow backend first (no GPU: tfjs-node, not -gpu)', async (t) => {
    const c = await chooseBackend({ gpu: false });
    t.is(c.backend, 'tensorflow');
    t.is(c.pkg, '@tensorflow/tfjs-node');
    t.is(tf.getBackend(), 'tensorflow');
    t.deepEqual(c.skipped, [{ pkg: '@tensorflow/tfjs-node-gpu', why: 'no GPU given to this process' }]);
  });
  tensorRoundTrips(test, 'tensorflow');
} else {
  warnNoNative('the tensor codec and the backend choice');
  test.serial('without the native backend troupe chooses wasm, saying tfjs-node is not installed', async (t) => {
    const c = await chooseBackend({ gpu: false });
    t.is(c.backend, 'wasm');
    t.deepEqual(c.skipped, [
      { pkg: '@tensorflow/tfjs-node-gpu', why: 'no GPU given to this process' },
      { pkg: '@tensorflow/tfjs-node', why: 'not installed' },
    ]);
  });
}
