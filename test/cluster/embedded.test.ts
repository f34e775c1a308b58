// init() with nothing to join starts a local cluster; shutdown() (or the driver dying) stops all of it.
import { readIdentities } from '../../runtime/cluster/identities.ts';
import test from 'ava';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { runCommand, tempDir, processesWithHome, isAlive, eventually } from '../helpers/cluster.ts';
import { expectedBackend } from '../helpers/backend.ts';

const root = join(import.meta.dirname, '..', '..');
// One at a time: each starts a whole cluster (and most an npm process); seven at once on two cores starve each other
// into their timeouts.

test.serial(
  'npm run demo trains on MNIST with 2 replicas: a line per epoch, a ' + 'chart, the test accuracy last (1 epoch here)',
  async (t) => {
    t.timeout(180_000);
    const home = tempDir(t);
    const out = join(tempDir(t), 'out');
    const r = await runCommand('npm', ['run', '--silent', 'demo'], {
      cwd: root,
      timeoutMs: 170_000,
      // The best backend that loads, as for a user: tensorflow where it is set up.
      env: {
        TROUPE_HOME: home,
        TROUPE_ADDRESS: '',
        TROUPE_TOKEN: '',
        TROUPE_TENSOR_BACKEND: '',
        EPOCHS: '1',
        MNIST_OUT: out,
      },
    });
    t.is(r.code, 0, r.stderr);
    t.regex(
      r.stdout,
      new RegExp(
        String.raw`^epoch 1\/1: loss 0\.\d{4} acc 0\.\d{4} {2}test loss 0\.\d{4} acc ` +
          String.raw`0\.9\d{3} {2}\d+ samples\/s, \d+% in allreduce$`,
        'm',
      ),
    );
    t.true(readFileSync(join(out, 'training.svg'), 'utf8').startsWith('<svg'), r.stdout);
    t.true(
      r.stdout.includes(`chart: ${join(out, 'training.svg')}; weights: ${join(out, 'weights.bin')}`),
      'written where MNIST_OUT says, never over the weights of a real run',
    );
    t.true(statSync(join(out, 'weights.bin')).size > 0);
    const last = r.stdout.trim().split('\n').pop()!;
    t.regex(last, /^test accuracy: 0\.9\d{3}$/);
    t.regex(r.stdout, new RegExp(`^2 replicas on the ${expectedBackend} backend;`, 'm'));
    t.deepEqual(processesWithHome(home), []);
  },
);

test.serial(
  'npm run example:basics runs the tasks-and-actors example on an ' + 'embedded cluster and leaves nothing behind',
  async (t) => {
    const home = tempDir(t);
    const r = await runCommand('npm', ['run', '--silent', 'example:basics'], {
      cwd: root,
      env: { TROUPE_HOME: home, TROUPE_ADDRESS: '', TROUPE_TOKEN: '' },
    });
    t.is(r.code, 0, r.stderr);
    t.regex(r.stdout, /started by this script/);
    t.regex(r.stdout, /squares of 0\.\.9/);
    t.regex(r.stdout, /sum of squares via nested refs: 285/);
    t.regex(r.stdout, /caught TaskError \(RangeError\): exploded: on purpose/);
    t.regex(r.stdout, /^\(Mean pid=\d+\) now holding 6 values$/m);
    t.regex(r.stdout, /mean of 1\.\.6 from the actor: 3\.5/);
    t.deepEqual(processesWithHome(home), []);
    t.deepEqual(
      readdirSync(home).filter((f) => f.startsWith('session_')),
      [],
    ); // an embedded session dir is temporary
    t.deepEqual(
      readdirSync('/dev/shm').filter((f) => f.includes(home.split('/').pop()!)),
      [],
    );
  },
);

test.serial(
  'npm run example:gpus: the node offers the GPUs its CUDA_VISIBLE_DEVICES names, and each task sees only its own',
  async (t) => {
    const home = tempDir(t);
    const r = await runCommand('npm', ['run', '--silent', 'example:gpus'], {
      cwd: root,
      // No GPU here: the node is given two device names as an admin would, the way a real H100 was checked.
      env: { TROUPE_HOME: home, TROUPE_ADDRESS: '', TROUPE_TOKEN: '', CUDA_VISIBLE_DEVICES: 'GPU-0a1b,5' },
    });
    t.is(r.code, 0, r.stderr);
    t.regex(r.stdout, /^a task without GPUs: pid \d+, CUDA_VISIBLE_DEVICES="";/m);
    t.regex(r.stdout, /^a task with numGpus: 1: pid \d+, CUDA_VISIBLE_DEVICES="(GPU-0a1b|5)";/m);
    const halves = [...r.stdout.matchAll(/numGpus: 0\.5: pid \d+, CUDA_VISIBLE_DEVICES="([^"]*)"/g)].map((m) => m[1]);
    t.is(halves.length, 2, r.stdout);
    t.true(['GPU-0a1b', '5'].includes(halves[0]!) && halves[0] === halves[1], 'two halves share one device');
    t.regex(r.stdout, /tfjs backend of a worker given a GPU: \w+/);
    t.deepEqual(processesWithHome(home), []);
  },
);

test.serial(
  'npm run example:search runs a hyperparameter search of MNIST MLPs as parallel tasks and prints the best last ' +
    '(2 trials of 1 epoch here)',
  async (t) => {
    t.timeout(120_000);
    const home = tempDir(t);
    const r = await runCommand('npm', ['run', '--silent', 'example:search'], {
      cwd: root,
      timeoutMs: 110_000,
      env: {
        TROUPE_HOME: home,
        TROUPE_ADDRESS: '',
        TROUPE_TOKEN: '',
        TROUPE_TENSOR_BACKEND: '',
        SAMPLES: '1',
        EPOCHS: '1',
      },
    });
    t.is(r.code, 0, r.stderr);
    t.is(r.stdout.match(/^trial \d ended \(\d\/2\): accuracy 0\.\d{4}$/gm)?.length, 2, r.stdout);
    t.regex(r.stdout, new RegExp(`^2 trials \\(seed 1\\) on the ${expectedBackend} backend, best first:$`, 'm'));
    t.regex(r.stdout, /^ +\d +(32|128) +\d\.\d{2}e-\d +(32|64) +0\.\d{4} +\d+\.\d{4} +\d+\.\d {2}<- best$/m);
    const last = r.stdout.trim().split('\n').pop()!;
    t.regex(
      last,
      new RegExp(
        String.raw`^best: hidden (32|128), learning rate \d\.\d{2}e-\d, batch (32|64): ` +
          String.raw`test accuracy 0\.[89]\d{3} \(\d+\.\d s in all\)$`,
        '',
      ),
    );
    t.deepEqual(processesWithHome(home), []);
  },
);

test.serial(
  'npm run example:inference serves the MNIST CNN batched and unbatched, and the pool grows and shrinks under a ' +
    'burst (1 s runs here)',
  async (t) => {
    t.timeout(120_000);
    const home = tempDir(t);
    const r = await runCommand('npm', ['run', '--silent', 'example:inference'], {
      cwd: root,
      timeoutMs: 110_000,
      env: { TROUPE_HOME: home, TROUPE_ADDRESS: '', TROUPE_TOKEN: '', DURATION: '1', CONCURRENCY: '64' },
    });
    t.is(r.code, 0, r.stderr);
    const figures = '[\\d,]+ requests/s, p50 [\\d.]+ ms, p99 [\\d.]+ ms, mean batch';
    t.regex(r.stdout, new RegExp(`^unbatched \\(maxBatchSize 1\\) *: ${figures} 1\\.0$`, 'm'));
    t.regex(r.stdout, new RegExp(`^batched \\(maxBatchSize 32, wait 5ms\\): ${figures} [\\d.]+$`, 'm'));
    t.regex(
      r.stdout,
      new RegExp(
        String.raw`^autoscaling \(1\.\.2 replicas\): 1 → 2 replicas at [\d.]+ s ` +
          String.raw`\(\d+ requests in the pool\); 2 → 1 replicas at `,
        'm',
      ),
    );
    t.regex(
      r.stdout,
      new RegExp(
        String.raw`^the model alone \(its batch runs in the replica\): [\d,]+ samples\/s ` +
          String.raw`one by one, [\d,]+ in batches of [\d.]+: \d+\.\d×$`,
        'm',
      ),
    );
    t.regex(r.stdout.trim().split('\n').pop()!, /^batched vs unbatched throughput: \d+\.\d×$/);
    t.deepEqual(processesWithHome(home), []);
  },
);

test.serial('killing the driver with SIGKILL takes its embedded cluster down: no orphans', async (t) => {
  const home = tempDir(t);
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', '--conditions=troupe-source', 'test/fixtures/hang-driver.ts'],
    {
      cwd: root,
      env: { ...process.env, TROUPE_HOME: home, TROUPE_ADDRESS: '', TROUPE_TOKEN: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  t.teardown(() => {
    for (const p of [child.pid!, ...processesWithHome(home)])
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        /* gone */
      }
  });
  const line = await new Promise<string>((resolve, reject) => {
    child.stdout.once('data', (d) => resolve(String(d)));
    child.once('exit', (code) => reject(new Error(`driver exited early with ${code}: ${stderr}`)));
  });
  t.like(JSON.parse(line), { ready: true, embedded: true, sum: 3 });
  const cluster = processesWithHome(home).filter((p) => p !== child.pid);
  t.true(cluster.length >= 4); // nats-server, head, node daemon, a worker
  // Secrets: no credential is in a command line, and the files that hold them (and the users) are private.
  const session = readdirSync(home).find((f) => f.startsWith('session_'))!;
  for (const f of ['nats-server.conf', 'auth.conf', 'identities.json'])
    t.is(statSync(join(home, session, f)).mode & 0o777, 0o600, f);
  const seeds = readIdentities(join(home, session)).map((i) => i.credential);
  for (const pid of cluster)
    for (const seed of seeds) t.false(readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(seed));
  t.true(readdirSync('/dev/shm').some((f) => f.includes(session)));
  child.kill('SIGKILL');
  await eventually('every cluster process gone', async () => cluster.every((p) => !isAlive(p)), 15_000);
  t.deepEqual(
    readdirSync('/dev/shm').filter((f) => f.includes(session)),
    [],
  ); // the node removed its store on the way out
});

test.serial(
  'a remote function defined in the script node runs is refused ' + 'where it is defined, instead of waiting for ever',
  async (t) => {
    const home = tempDir(t);
    const r = await runCommand(
      process.execPath,
      ['--import', 'tsx', '--conditions=troupe-source', 'test/fixtures/remote-in-script.ts'],
      {
        cwd: root,
        timeoutMs: 30_000,
        env: { TROUPE_HOME: home, TROUPE_ADDRESS: '', TROUPE_TOKEN: '' },
      },
    );
    t.is(r.code, 1, r.stdout);
    t.regex(
      r.stderr,
      new RegExp(
        String.raw`UsageError: a remote function is defined in \S+remote-in-script\.ts, the ` +
          'script node is running: .* Define it in a module of its own',
        '',
      ),
    );
    t.deepEqual(processesWithHome(home), []);
  },
);

test.serial(
  'shutdown() waits for a worker that is slow to stop, even past ' + 'the node timeout: nothing outlives the driver',
  async (t) => {
    const home = tempDir(t);
    const r = await runCommand(
      process.execPath,
      ['--import', 'tsx', '--conditions=troupe-source', 'test/fixtures/slow-stop-driver.ts'],
      {
        cwd: root,
        timeoutMs: 60_000,
        env: { TROUPE_HOME: home, TROUPE_ADDRESS: '', TROUPE_TOKEN: '', TROUPE_NODE_TIMEOUT_MS: '1000' },
      },
    );
    t.is(r.code, 0, r.stderr);
    const { pids } = JSON.parse(r.stdout) as { pids: number[] };
    t.true(pids.length === 2 && pids.every((p) => p > 0));
    t.deepEqual(processesWithHome(home), []);
  },
);
