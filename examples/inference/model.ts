// The model the inference example serves: the MNIST CNN of examples/mnist, with the weights `npm run demo` saved
// when there are some (else its untrained first weights: the speed is the same, the answers are not).
import { existsSync, readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs-core';
import { inferenceModel } from 'troupe';
import { mnistJob } from '../mnist/job.ts';
import { WEIGHTS } from '../mnist/out-dir.ts';

export const digitModel = inferenceModel({
  inputShape: [28, 28, 1],
  model: async () => {
    const model = await mnistJob.spec.model();
    if (existsSync(WEIGHTS)) {
      const bytes = readFileSync(WEIGHTS);
      const all = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
      let at = 0;
      const weights = model.getWeights().map((w) => tf.tensor(all.subarray(at, (at += w.size)), w.shape));
      if (at !== all.length)
        throw new Error(`${WEIGHTS} has ${all.length} weights, the model ${at}: run npm run demo again`);
      model.setWeights(weights);
      tf.dispose(weights);
    }
    return model;
  },
});
