// The inference pool: every request gets its own answer, batches wait no longer than maxWaitMs, the pool grows and
// shrinks with its load, and a replica killed under load loses no request.
import test from 'ava';
import { serve, UsageError, type InferencePool, type BatchRecord } from '../../runtime/index.ts';
import { currentCore } from '../../runtime/core/core.ts';
import { useCluster, eventually } from '../helpers/cluster.ts';
import { affine, slowAffine } from '../fixtures/serving.ts';

useCluster(test, { head: { numCpus: 2 } });

const input = (i: number) => Float32Array.of(i, -i, i / 2, 1);
const expected = (i: number) => [2 * i + 1, -2 * i + 1, i + 1, 3];
const near = (a: Float32Array, b: number[]) => a.length === b.length && b.every((v, k) => Math.abs(a[k] - v) < 1e-4);
const batches = async (pool: InferencePool): Promise<BatchRecord[]> =>
  (await pool.replicaStats()).flatMap((s) => s.recent);
const replicaPids = async () =>
  (await currentCore().gcs()).actors
    .list()
    .then((all) => all.filter((a) => a.className === 'InferenceReplica' && a.state === 'ALIVE').map((a) => a.pid!));

async function withPool<T>(pool: InferencePool, fn: (p: InferencePool) => Promise<T>): Promise<T> {
  try {
    return await fn(pool);
  } finally {
    await pool.close();
  }
}

test.serial('requests sent together are batched, and each gets its own answer', async (t) => {
  await withPool(await serve(affine, { maxBatchSize: 8, maxWaitMs: 50 }), async (pool) => {
    const answers = await Promise.all(Array.from({ length: 50 }, (_, i) => pool.predict(input(i))));
    answers.forEach((y, i) => t.true(near(y, expected(i)), `request ${i}: ${Array.from(y)}`));
    t.true(near(await pool.predict([1, 2, 3, 4]), [3, 5, 7, 9]), 'plain arrays are inputs too');
    const record = await batches(pool);
    t.is(
      record.reduce((n, b) => n + b.size, 0),
      51,
    );
    t.true(record.every((b) => b.size <= 8));
    t.true(
      record.some((b) => b.size === 8 && b.reason === 'full'),
      JSON.stringify(record),
    );
    t.like(pool.stats(), { replicas: 1, completed: 51, failed: 0, ongoing: 0, queued: 0 });
    const [s] = await pool.replicaStats();
    t.is(s.backend, 'wasm');
  });
});

test.serial('batching respects max wait: a lone request runs after maxWaitMs, a full batch at once', async (t) => {
  await withPool(await serve(affine, { maxBatchSize: 16, maxWaitMs: 400 }), async (pool) => {
    const t0 = performance.now();
    t.true(near(await pool.predict(input(3)), expected(3)));
    const lone = performance.now() - t0;
    t.true(lone >= 395, `answered after ${lone} ms, before maxWaitMs`);
    t.true(lone < 400 + 5000, `answered after ${lone} ms: held past maxWaitMs`);
    const [first] = await batches(pool);
    t.like(first, { size: 1, reason: 'wait' });
    t.true(first.waitedMs >= 399 && first.waitedMs < 400 + 1000, `waited ${first.waitedMs} ms`);
    // Three together: one batch of three, run when the first of them has waited maxWaitMs.
    await Promise.all([1, 2, 3].map((i) => pool.predict(input(i))));
    t.like((await batches(pool))[1], { size: 3, reason: 'wait' });
  });
  await withPool(await serve(affine, { maxBatchSize: 16, maxWaitMs: 600_000 }), async (pool) => {
    const answers = await Promise.all(Array.from({ length: 16 }, (_, i) => pool.predict(input(i))));
    answers.forEach((y, i) => t.true(near(y, expected(i))));
    const [full] = await batches(pool);
    t.like(full, { size: 16, reason: 'full' });
    t.true(full.waitedMs < 30_000, `a full batch waited ${full.waitedMs} ms`);
  });
});

test.serial('the pool grows under load and shrinks when it is gone', async (t) => {
  t.timeout(90_000);
  const scaled: Array<{ from: number; to: number }> = [];
  const pool = await serve(slowAffine, {
    minReplicas: 1,
    maxReplicas: 2,
    maxBatchSize: 4,
    maxWaitMs: 5,
    maxOngoingRequests: 4,
    targetOngoingRequests: 4,
    upscaleDelayMs: 300,
    downscaleDelayMs: 1000,
    onScale: ({ from, to }) => scaled.push({ from, to }),
  });
  await withPool(pool, async () => {
    t.like(pool.stats(), { replicas: 1, starting: 0 });
    // 32 requests kept in the pool: 8 per replica wanted, so 2 replicas.
    let stop = false,
      sent = 0;
    const client = async () => {
      while (!stop) {
        const i = sent++;
        t.true(near(await pool.predict(input(i)), expected(i)));
      }
    };
    const load = Promise.all(Array.from({ length: 32 }, client));
    await eventually('a second replica', async () => pool.stats().replicas === 2, 45_000);
    await new Promise((r) => setTimeout(r, 500));
    stop = true;
    await load;
    const served = (await pool.replicaStats()).map((s) => s.requests);
    t.is(served.length, 2);
    t.true(
      served.every((n) => n > 0),
      `requests per replica: ${served}`,
    );
    await eventually(
      'back to one replica',
      async () => pool.stats().replicas === 1 && (await replicaPids()).length === 1,
      20_000,
    );
    t.deepEqual(scaled, [
      { from: 1, to: 2 },
      { from: 2, to: 1 },
    ]);
    t.like(pool.stats(), { failed: 0, ongoing: 0, queued: 0 });
  });
});

test.serial('a replica killed under load loses no request', async (t) => {
  t.timeout(90_000);
  await withPool(await serve(slowAffine, { maxBatchSize: 8, maxWaitMs: 5 }), async (pool) => {
    const [pid] = await replicaPids();
    const requests = Array.from({ length: 200 }, (_, i) => pool.predict(input(i)));
    setTimeout(() => process.kill(pid, 'SIGKILL'), 100);
    const answers = await Promise.all(requests);
    answers.forEach((y, i) => t.true(near(y, expected(i)), `request ${i}`));
    const now = await replicaPids();
    t.is(now.length, 1);
    t.not(now[0], pid, 'the replica was restarted');
  });
});

test.serial('bad input is refused where it is given; the pool goes on', async (t) => {
  await t.throwsAsync(serve(affine, { minReplicas: 2, maxReplicas: 1 }), {
    instanceOf: UsageError,
    message: /maxReplicas \(1\) is below minReplicas \(2\)/,
  });
  await t.throwsAsync(serve(affine, { maxBatchSize: 0 }), {
    instanceOf: UsageError,
    message: /maxBatchSize must be a whole number >= 1/,
  });
  await t.throwsAsync(serve({} as never), { instanceOf: UsageError, message: /serve\(\) takes an inferenceModel/ });
  const pool = await serve(affine, { maxWaitMs: 1 });
  await withPool(pool, async () => {
    await t.throwsAsync(pool.predict([1, 2]), {
      instanceOf: UsageError,
      message: /one input of 4 numbers .* got Array of length 2/,
    });
    await t.throwsAsync(pool.predict('x' as never), { instanceOf: UsageError, message: /got string/ });
    t.true(near(await pool.predict(input(5)), expected(5)));
  });
  await t.throwsAsync(pool.predict(input(1)), { instanceOf: UsageError, message: /closed/ });
  t.deepEqual(await replicaPids(), [], 'close() stops the replicas');
});
