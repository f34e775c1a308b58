// A driver script ends when its work does, without shutdown(), as a Ray driver does: troupe then leaves as
// shutdown() would (job finished, leases back, owned actors ended, an embedded cluster stopped), while anything the
// script awaits keeps it running until it comes.
import test from 'ava';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { currentCore } from '../../runtime/core/core.ts';
import { useCluster, runCommand, eventually, processesWithHome, tempDir } from '../helpers/cluster.ts';
import { add } from '../fixtures/tasks.ts';

const cluster = useCluster(test, { head: { numCpus: 2 } });
const root = join(import.meta.dirname, '..', '..');
/** Far above what the script needs, far below for ever: the old drivers never ended. */
const BOUND_MS = 60_000;

const driver = (args: string[], env: Record<string, string>) =>
  runCommand(
    process.execPath,
    ['--import', 'tsx', '--conditions=troupe-source', 'test/fixtures/exit-driver.ts', ...args],
    {
      cwd: root,
      timeoutMs: BOUND_MS,
      env,
    },
  );
const embedded = (home: string) => ({ TROUPE_HOME: home, TROUPE_ADDRESS: '', TROUPE_TOKEN: '' });
const joined = () => ({ TROUPE_HOME: cluster().home, TROUPE_ADDRESS: '', TROUPE_TOKEN: '' });

/** What the script printed first (its pid, job, whether it started the cluster) and last (its work's result). */
function lines(stdout: string): { first: { pid: number; jobId: string; embedded: boolean }; last: unknown } {
  const all = stdout.trim().split('\n');
  return { first: JSON.parse(all[0]), last: JSON.parse(all[all.length - 1]) };
}

/** The object stores the node of the embedded cluster started by driver `pid` left in /dev/shm: its session dir is
 * named after that pid. */
const storesOf = (pid: number) =>
  readdirSync('/dev/shm').filter((f) => f.startsWith('troupe-session_') && f.includes(`_${pid}_`));

test.serial(
  'a script on an embedded cluster ends by itself without shutdown(), leaving no daemon, worker or store',
  async (t) => {
    t.timeout(BOUND_MS + 30_000);
    const home = tempDir(t);
    const r = await driver([], embedded(home));
    t.is(r.code, 0, `signal ${r.signal}; ${r.stderr}`);
    const { first, last } = lines(r.stdout);
    t.true(first.embedded);
    t.deepEqual(last, { sum: 3, count: 2, inc: 1 });
    t.deepEqual(processesWithHome(home), []);
    t.deepEqual(storesOf(first.pid), []);
    t.deepEqual(
      readdirSync(home).filter((f) => f.startsWith('session_')),
      [],
    );
  },
);

test.serial(
  'a script that joined a running cluster ends by itself: its job is finished, its actors and unawaited task ' +
    'end, and the cluster keeps running',
  async (t) => {
    t.timeout(BOUND_MS + 30_000);
    const r = await driver([], joined());
    t.is(r.code, 0, `signal ${r.signal}; ${r.stderr}`);
    const { first, last } = lines(r.stdout);
    t.false(first.embedded);
    t.deepEqual(last, { sum: 3, count: 2, inc: 1 });
    const gcs = await currentCore().gcs();
    t.like(await gcs.jobs.get(first.jobId), { state: 'SUCCEEDED', pid: first.pid });
    await eventually('the owned actor ended', async () => (await gcs.names.get('default.exit-counter')) === undefined);
    // The 60 s task it did not await was stopped with it (as in Ray): both CPUs are free again.
    await eventually('its CPUs returned', async () => (await cluster().status()).nodes[0].available.CPU === 2);
    t.is(await add.remote(2, 3), 5);
  },
);

test.serial('a script that awaits a task of a few seconds stays until the result comes, then ends', async (t) => {
  t.timeout(BOUND_MS + 30_000);
  const r = await driver(['long', '3000'], joined());
  t.is(r.code, 0, `signal ${r.signal}; ${r.stderr}`);
  t.deepEqual(lines(r.stdout).last, { slept: 3000 });
});

test.serial('a wait() that timed out on a value a worker owns does not keep the script running', async (t) => {
  t.timeout(BOUND_MS + 30_000);
  const r = await driver(['wait-borrowed'], joined());
  t.is(r.code, 0, `signal ${r.signal}; ${r.stderr}`);
  t.deepEqual(lines(r.stdout).last, { ready: 0 });
});

test.serial('the script keeps its exit code; shutdown() twice, then the end of the script, is harmless', async (t) => {
  t.timeout(2 * BOUND_MS + 30_000);
  const failed = await driver(['long', '10'], { ...joined(), EXIT_CODE: '3' });
  t.is(failed.code, 3, failed.stderr);
  const gcs = await currentCore().gcs();
  t.like(await gcs.jobs.get(lines(failed.stdout).first.jobId), { state: 'FAILED' });
  const twice = await driver(['long', '10', 'shutdown-twice'], joined());
  t.is(twice.code, 0, twice.stderr);
  t.deepEqual(lines(twice.stdout).last, { slept: 10, shutdown: 'twice' });
  t.like(await gcs.jobs.get(lines(twice.stdout).first.jobId), { state: 'SUCCEEDED' });
});

// Nothing async runs after these: the daemons see their parent gone (exitWithParent) and stop by themselves.
test.serial(
  'process.exit() or an uncaught exception in a script takes its embedded cluster down with it',
  async (t) => {
    t.timeout(2 * BOUND_MS + 60_000);
    for (const [mode, code] of [
      ['exit', 4],
      ['throw', 1],
    ] as const) {
      const home = tempDir(t);
      const r = await driver(['long', '10', mode], embedded(home));
      t.is(r.code, code, r.stderr);
      await eventually(`no daemon after ${mode}`, async () => processesWithHome(home).length === 0, 30_000);
      t.deepEqual(storesOf(lines(r.stdout).first.pid), []);
    }
  },
);
