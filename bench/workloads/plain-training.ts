// The reference the training rows are judged against: the demo's CNN trained in plain Node processes, without troupe
// and without any exchange between them. One process, then two at once, each with 1 TensorFlow thread: two at once
// show how much this machine's cores give two replicas at most (they share caches, memory and the other processes).
// The bench runs this file as child processes; each prints its samples per second.
import { spawn } from 'node:child_process';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-layers';
import type { LayersModel } from '@tensorflow/tfjs-layers';
import { chooseBackend } from 'troupe';
import { mnistJob } from '../../examples/mnist/job.ts';

export interface PlainTraining {
  backend: string;
  /** Samples per second of one process alone, and the sum of two running at once. */
  one: number;
  two: number;
}

/** Runs `steps` steps (batch `batchSize`) in one process alone, then in two at once. */
export async function plainTraining(o: { steps: number; batchSize: number; backend: string }): Promise<PlainTraining> {
  // A first process, not timed: the first to run on a machine measured 20–30% slower than any after it (pages of
  // the 850 MB TensorFlow library still to load, and the like).
  await child({ ...o, steps: 10 });
  const one = await child(o);
  const two = await Promise.all([child(o), child(o)]);
  return { backend: one.backend, one: one.samplesPerSec, two: two[0].samplesPerSec + two[1].samplesPerSec };
}

function child(o: { steps: number; batchSize: number; backend: string }): Promise<{
  backend: string;
  samplesPerSec: number;
}> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--import', 'tsx', import.meta.filename, String(o.steps), String(o.batchSize)], {
      env: {
        ...process.env,
        TROUPE_TENSOR_BACKEND: o.backend,
        TF_NUM_INTRAOP_THREADS: '1',
        TF_NUM_INTEROP_THREADS: '1',
        TF_CPP_MIN_LOG_LEVEL: '2',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    // TensorFlow's start-up lines go to stderr: shown only if the process fails.
    let [out, err] = ['', ''];
    p.stdout.on('data', (d) => {
      out += d;
    });
    p.stderr.on('data', (d) => {
      err = (err + d).slice(-4000);
    });
    p.on('error', reject);
    p.on('close', (code) => {
      try {
        if (code !== 0) throw new Error(`plain training exited with ${code}: ${err}`);
        resolve(JSON.parse(out.trim().split('\n').at(-1)!));
      } catch (e) {
        reject(e);
      }
    });
  });
}

/** One process: the replica's step (gather a batch, gradients, the update), timed after a warm-up. */
async function main(steps: number, batchSize: number): Promise<void> {
  const { backend } = await chooseBackend();
  const job = mnistJob.spec;
  const model = (await job.model()) as LayersModel;
  const optimizer = await job.optimizer({ replicas: 1, mode: 'sync' });
  const { x, y } = await job.data({ rank: 0, worldSize: 1 });
  const vars = model.trainableWeights.map((w) => w.read() as tf.Variable);
  const n = x.shape[0];
  const step = (i: number) => {
    const idx = tf.tensor1d(
      Int32Array.from({ length: batchSize }, (_, k) => (i * batchSize + k) % n),
      'int32',
    );
    const [xb, yb] = [tf.gather(x, idx), tf.gather(y, idx)];
    // The replica's default loss: cross-entropy on the softmax's probabilities.
    const loss = () => {
      const p = model.apply(xb, { training: true }) as tf.Tensor;
      return tf.neg(tf.mean(tf.sum(tf.mul(yb, tf.log(tf.clipByValue(p, 1e-7, 1))), -1))) as tf.Scalar;
    };
    const { value, grads } = tf.variableGrads(loss, vars);
    value.dataSync();
    optimizer.applyGradients(grads);
    tf.dispose([idx, xb, yb, value, ...Object.values(grads)]);
  };
  const warm = Math.min(50, steps);
  for (let i = 0; i < warm; i++) step(i);
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) step(warm + i);
  const samplesPerSec = (steps * batchSize) / ((performance.now() - t0) / 1000);
  console.log(JSON.stringify({ backend, samplesPerSec }));
}

if (process.argv[1] === import.meta.filename) await main(Number(process.argv[2]), Number(process.argv[3]));
