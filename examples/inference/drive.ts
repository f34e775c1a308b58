// The load the inference example (and npm run bench's inference row) puts on a pool: `concurrency` requests kept in
// flight for `seconds`, with what comes back measured.
import { serve, type ServeOptions } from 'troupe';
import { digitModel } from './model.ts';

export interface Load {
  seconds: number;
  concurrency: number;
  images: Float32Array[];
  labels: ArrayLike<number>;
}

export interface Run {
  perSec: number;
  p50: number;
  p99: number;
  accuracy: number;
  meanBatch: number;
  /** Samples per second of the replicas' batch runs alone (the model, without the serving around it). */
  modelPerSec: number;
  /** The tfjs backend the replicas computed on. */
  backend: string;
}

/** Every request in flight is handed to the replica in both runs, in the same messages: only batching differs. */
export const unbatched = (concurrency: number): ServeOptions => ({ maxBatchSize: 1, maxOngoingRequests: concurrency });
export const batched = (concurrency: number): ServeOptions => ({
  maxBatchSize: 32,
  maxWaitMs: 5,
  maxOngoingRequests: concurrency,
});

/** Keeps `concurrency` requests in flight for `seconds` on a pool of the digit model and measures what comes back. */
export async function drive(options: ServeOptions, { seconds, concurrency, images, labels }: Load): Promise<Run> {
  const pool = await serve(digitModel, options);
  try {
    await Promise.all(images.slice(0, 64).map((x) => pool.predict(x))); // warm: connections, the first batches
    const latencies: number[] = [];
    let next = 0,
      correct = 0;
    const until = performance.now() + seconds * 1000;
    const started = performance.now();
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (performance.now() < until) {
          const i = next++ % images.length;
          const t0 = performance.now();
          const y = await pool.predict(images[i]);
          latencies.push(performance.now() - t0);
          if (argMax(y) === labels[i]) correct++;
        }
      }),
    );
    const elapsed = (performance.now() - started) / 1000;
    latencies.sort((a, b) => a - b);
    const stats = await pool.replicaStats();
    const recent = stats.flatMap((s) => s.recent);
    return {
      perSec: latencies.length / elapsed,
      p50: pct(latencies, 0.5),
      p99: pct(latencies, 0.99),
      accuracy: correct / latencies.length,
      meanBatch: recent.reduce((n, b) => n + b.size, 0) / recent.length,
      modelPerSec: (1000 * recent.reduce((n, b) => n + b.size, 0)) / recent.reduce((ms, b) => ms + b.runMs, 0),
      backend: [...new Set(stats.map((s) => s.backend))].join(', '),
    };
  } finally {
    await pool.close();
  }
}

const pct = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
const argMax = (y: Float32Array) => y.reduce((best, v, i) => (v > y[best] ? i : best), 0);
