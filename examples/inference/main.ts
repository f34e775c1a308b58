// Serving the MNIST CNN from an inference pool on an embedded cluster: the same load unbatched and with dynamic
// batching (throughput, p50/p99 latency), then a load burst that makes the pool grow and shrink.
// `npm run example:inference`; DURATION (seconds per run, default 8) and CONCURRENCY (requests kept in flight, default
// 128).
import { init, shutdown, serve } from 'troupe';
import { testDigits } from '../mnist/digits.ts';
import { digitModel } from './model.ts';
import { drive, batched as batching, unbatched as oneByOne, type Run } from './drive.ts';
import { WEIGHTS } from '../mnist/out-dir.ts';
import { existsSync } from 'node:fs';

const seconds = Number(process.env.DURATION ?? 8);
const concurrency = Number(process.env.CONCURRENCY ?? 128);
const load = { seconds, concurrency, ...testDigits() };

const line = (what: string, r: Run) =>
  `${what}: ${Math.round(r.perSec).toLocaleString('en')} requests/s, p50 ${r.p50.toFixed(1)} ms, p99 ` +
  `${r.p99.toFixed(1)} ms, mean batch ${r.meanBatch.toFixed(1)}`;

await init({ numCpus: 2, logToDriver: false });
try {
  console.log(`${concurrency} requests in flight for ${seconds} s per run, one replica (1 CPU)`);
  const unbatched = await drive(oneByOne(concurrency), load);
  console.log(line('unbatched (maxBatchSize 1)         ', unbatched));
  const batched = await drive(batching(concurrency), load);
  console.log(line('batched (maxBatchSize 32, wait 5ms)', batched));

  // A burst on an autoscaling pool: it grows to 2 replicas, and back to 1 once the burst is over.
  const events: string[] = [];
  const t0 = performance.now();
  const at = () => `${((performance.now() - t0) / 1000).toFixed(1)} s`;
  const pool = await serve(digitModel, {
    minReplicas: 1,
    maxReplicas: 2,
    maxBatchSize: 32,
    maxWaitMs: 5,
    upscaleDelayMs: 500,
    downscaleDelayMs: 2000,
    onScale: ({ from, to, load }) => events.push(`${from} → ${to} replicas at ${at()} (${load} requests in the pool)`),
  });
  try {
    const burstUntil = performance.now() + seconds * 1000;
    let served = 0;
    await Promise.all(
      Array.from({ length: concurrency }, async (_, k) => {
        for (let i = k; performance.now() < burstUntil; i += concurrency) {
          await pool.predict(load.images[i % load.images.length]);
          served++;
        }
      }),
    );
    console.log(
      `burst of ${concurrency} in flight for ${seconds} s, ended at ${at()}: ${served.toLocaleString('en')} requests ` +
        `answered`,
    );
    const idleUntil = Date.now() + 10_000;
    while (pool.stats().replicas + pool.stats().starting > 1 && Date.now() < idleUntil)
      await new Promise((r) => setTimeout(r, 100));
    console.log(`autoscaling (1..2 replicas): ${events.join('; ') || 'no change'}`);
  } finally {
    await pool.close();
  }

  const weights = existsSync(WEIGHTS)
    ? 'trained weights from npm run demo'
    : 'untrained weights: run npm run demo first to serve the trained model';
  console.log(`accuracy of the served answers: ${batched.accuracy.toFixed(4)} (${weights})`);
  // What batching can gain at most here: how much faster the model itself runs per sample in batches than one by one.
  const model = (r: Run) => Math.round(r.modelPerSec).toLocaleString('en');
  console.log(
    `the model alone (its batch runs in the replica): ${model(unbatched)} samples/s one by one, ${model(batched)} in ` +
      `batches of ${batched.meanBatch.toFixed(1)}: ${(batched.modelPerSec / unbatched.modelPerSec).toFixed(1)}×`,
  );
  console.log(`batched vs unbatched throughput: ${(batched.perSec / unbatched.perSec).toFixed(1)}×`);
} finally {
  await shutdown();
}
