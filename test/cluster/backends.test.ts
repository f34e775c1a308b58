// The native tensorflow backend, and its set-up.
// - A worker sizes TensorFlow's thread pools from the CPUs it was given.
// - `troupe setup tensorflow` names the step it cannot do and exits 1; troupe goes on.
// - Where the native backend is set up (CI runs npm run setup:tensorflow first), training (sync, local SGD, parameter
//   servers, with kills) and inference run on it here; the rest of the suite computes on wasm (helpers/cluster.ts),
//   and the demo's and the search example's tests on the best backend.
import test from 'ava';
import { mkdtempSync, mkdirSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnSync } from 'node:child_process';
import { kill, serve, train } from '../../runtime/index.ts';
import { TensorflowSetupError } from '../../runtime/base/errors.ts';
import { setupNativeTensorflow, tfjsProjectDir } from '../../runtime/cli/native-tensorflow.ts';
import { useCluster } from '../helpers/cluster.ts';
import { trainKillingReplica1 } from '../helpers/training.ts';
import { expectedBackend, nativeInstalled, warnNoNative } from '../helpers/backend.ts';
import { ThreadsProbe } from '../fixtures/threads.ts';
import { lineJob } from '../fixtures/training.ts';
import { affine } from '../fixtures/serving.ts';

delete process.env.TROUPE_TENSOR_BACKEND; // this cluster's workers and this driver choose the best that loads
delete process.env.TF_NUM_INTRAOP_THREADS;
delete process.env.TF_NUM_INTEROP_THREADS;
useCluster(test, { head: { numCpus: 4 } });
const repo = fileURLToPath(new URL('../..', import.meta.url));

test.serial('a worker computes with as many TensorFlow threads as the CPUs it was given, at least one', async (t) => {
  // Alive together, so each has a worker of its own, bound with its own lease.
  const two = await ThreadsProbe.options({ numCpus: 2 }).remote();
  const one = await ThreadsProbe.options({ numCpus: 1 }).remote();
  const none = await ThreadsProbe.options({ numCpus: 0 }).remote();
  t.deepEqual(await two.threads(), { intra: '2', inter: '1' });
  t.deepEqual(await one.threads(), { intra: '1', inter: '1' });
  t.deepEqual(await none.threads(), { intra: '1', inter: '1' });
  t.is(await one.backend(), expectedBackend);
  for (const a of [two, one, none]) await kill(a);
});

/** A project with troupe's tfjs-core and no native backend, for the set-up to fail in without touching ours. */
function bareProject(): { dir: string; [Symbol.dispose](): void } {
  const dir = mkdtempSync(join(tmpdir(), 'troupe-setup-'));
  mkdirSync(join(dir, 'node_modules', '@tensorflow'), { recursive: true });
  symlinkSync(
    join(tfjsProjectDir(), 'node_modules', '@tensorflow', 'tfjs-core'),
    join(dir, 'node_modules', '@tensorflow', 'tfjs-core'),
  );
  return { dir, [Symbol.dispose]: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Runs fn with some variables changed, then puts them back. */
async function withEnv<T>(vars: Record<string, string | undefined>, fn: () => Promise<T>): Promise<T> {
  const before = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  const set = (v: Record<string, string | undefined>) => {
    for (const [k, x] of Object.entries(v))
      if (x === undefined) delete process.env[k];
      else process.env[k] = x;
  };
  set(vars);
  try {
    return await fn();
  } finally {
    set(before);
  }
}

test.serial('the set-up names the step it cannot do: no python3, then a registry that does not answer', async (t) => {
  using project = bareProject();
  const bin = join(project.dir, 'bin'); // node alone: no python3, no compiler
  mkdirSync(bin);
  symlinkSync(process.execPath, join(bin, 'node'));
  const noPython = await withEnv({ PATH: bin }, () =>
    t.throwsAsync(setupNativeTensorflow({ projectDir: project.dir }), { instanceOf: TensorflowSetupError }),
  );
  t.is(noPython?.step, 'python');
  t.regex(noPython?.message ?? '', /python3 is not on PATH/);

  // An empty cache and a registry on a loopback port nobody listens on: pip fails, and the set-up says so.
  const cache = join(project.dir, 'cache');
  const pipEnv = Object.fromEntries(
    Object.keys(process.env)
      .filter((k) => k.startsWith('PIP_'))
      .map((k) => [k, undefined]),
  );
  const offline = await withEnv(
    {
      ...pipEnv,
      TROUPE_CACHE_DIR: cache,
      PIP_CONFIG_FILE: '/dev/null',
      PIP_INDEX_URL: 'http://127.0.0.1:9/simple',
      PIP_RETRIES: '0',
      PIP_TIMEOUT: '2',
    },
    () => t.throwsAsync(setupNativeTensorflow({ projectDir: project.dir }), { instanceOf: TensorflowSetupError }),
  );
  t.is(offline?.step, 'registry', offline?.message);
  t.regex(
    offline?.message ?? '',
    /pip could not download tensorflow-cpu==\d+\.\d+\.\d+ \(is the Python package registry/,
  );
  t.deepEqual(readdirOrEmpty(join(cache, 'tensorflow')), [], 'nothing half-made is left in the cache');
});

function readdirOrEmpty(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

test.serial(
  'the command: a usage error for what it does not know; once set up, a second run does nothing',
  async (t) => {
    const troupe = (args: string[]) =>
      spawnSync(process.execPath, [join(repo, 'runtime/cli/troupe.mjs'), ...args], { cwd: repo, encoding: 'utf8' });
    const unknown = troupe(['setup', 'pytorch']);
    t.is(unknown.status, 2, unknown.stderr);
    t.regex(unknown.stderr, /unknown component 'pytorch'; try: troupe setup tensorflow/);
    t.is(troupe(['setup', 'tensorflow', '--tensorflow-version', 'latest']).status, 2);
    if (!nativeInstalled()) return t.log('not set up here: the second run is not tested');
    const again = troupe(['setup', 'tensorflow']);
    t.is(again.status, 0, again.stderr);
    t.regex(again.stdout, /already loads here \(backend tensorflow\): nothing to do/);
    t.regex(
      again.stdout,
      /already set up: @tensorflow\/tfjs-node [\d.]+ on TensorFlow [\d.]+\. 1024² matMul: [\d.]+ GFLOP\/s on 1 thread/,
    );
  },
);

if (expectedBackend === 'tensorflow') {
  for (const mode of ['sync', 'ps'] as const)
    test.serial(`on tensorflow: ${mode} training converges through a replica killed mid-epoch`, async (t) => {
      t.timeout(120_000);
      const r = await trainKillingReplica1({ epochs: 3, mode, servers: mode === 'ps' ? 2 : undefined });
      t.is(r.backend, 'tensorflow');
      t.is(r.failures, 1);
      t.true(r.history[2].testAccuracy! > 0.9, `test accuracy ${r.history[2].testAccuracy}`);
    });
  test.serial('on tensorflow: local SGD converges', async (t) => {
    const r = await train(lineJob, { replicas: 2, epochs: 3, batchSize: 32, mode: 'local', averageEvery: 4 });
    t.is(r.backend, 'tensorflow');
    t.true(r.history[2].testAccuracy! > 0.9, `test accuracy ${r.history[2].testAccuracy}`);
  });
  test.serial('on tensorflow: a batched inference pool answers each request', async (t) => {
    const pool = await serve(affine, { maxBatchSize: 8, maxWaitMs: 20 });
    try {
      const ys = await Promise.all(
        Array.from({ length: 16 }, (_, i) => pool.predict(Float32Array.of(i, -i, i / 2, 1))),
      );
      ys.forEach((y, i) => t.true(Math.abs(y[0] - (2 * i + 1)) < 1e-4, `request ${i}: ${Array.from(y)}`));
      t.true(
        (await pool.replicaStats()).some((s) => s.recent.some((b) => b.size > 1)),
        'some requests were batched',
      );
      const [s] = await pool.replicaStats();
      t.is(s.backend, 'tensorflow');
    } finally {
      await pool.close();
    }
  });
} else {
  warnNoNative('training and inference');
}
