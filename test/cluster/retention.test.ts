// The head forgets DEAD actors after TROUPE_DEAD_ACTOR_RETENTION_MS (an hour by default; 3 s here), DEAD nodes after
// TROUPE_DEAD_NODE_RETENTION_MS (an hour; 3 s here), and ended jobs after TROUPE_JOB_RETENTION_MS (a day; 3 s here), so
// the state of a long-lived cluster stays bounded; a live actor, and the job of one, are kept however old they are.
import test, { type ExecutionContext } from 'ava';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { get, kill, getActor, ActorDiedError, ProtocolError } from '../../runtime/index.ts';
import { useCluster, eventually } from '../helpers/cluster.ts';
import { currentCore } from '../../runtime/core/core.ts';
import { startNode } from '../../runtime/cluster/local-cluster.ts';
import { subjects } from '../../runtime/protocol/subjects.ts';
import { Counter } from '../fixtures/actors.ts';

// Read by the head daemon this file's cluster starts.
process.env.TROUPE_DEAD_ACTOR_RETENTION_MS = '3000';
process.env.TROUPE_DEAD_NODE_RETENTION_MS = '3000';
process.env.TROUPE_JOB_RETENTION_MS = '3000';
process.env.TROUPE_CLIENT_TIMEOUT_MS = '3000'; // a driver silent this long is gone
const cluster = useCluster(test, { head: { numCpus: 1 } });

test('a DEAD actor keeps its record and cause for the retention, then is forgotten; calls on it fail', async (t) => {
  t.timeout(60_000);
  const actors = (await currentCore().gcs()).actors;
  const dead = Counter.remote(1);
  const live = Counter.remote(2);
  t.is(await dead.value(), 1);
  await kill(dead);
  const record = await actors.get(dead.actorId);
  t.like(record, { state: 'DEAD' });
  t.regex(record?.cause ?? '', /killed by kill\(\)/);
  t.true(Date.now() - Date.parse(record?.deadAt ?? '') < 3000, 'DEAD since the kill');

  await eventually(
    'the DEAD actor to be forgotten',
    async () => (await actors.get(dead.actorId)) === undefined,
    20_000,
  );
  await t.throwsAsync(get(dead.value()), { instanceOf: ActorDiedError });
  t.is(await live.value(), 2, 'a live actor is kept');
  t.like(await actors.get(live.actorId), { state: 'ALIVE' });
});

test('a node that stopped is DEAD for the retention, then forgotten; a live one is kept', async (t) => {
  t.timeout(60_000);
  const c = cluster();
  const node = await startNode({
    detached: false,
    numCpus: 1,
    numGpus: 0,
    prestartWorkers: 0,
    objectStoreDir: c.home,
    address: c.address,
    token: c.joinToken,
    sessionDir: c.head.sessionDir,
  });
  t.teardown(() => node.stop());
  const nodes = (await currentCore().gcs()).nodes;
  t.like(await nodes.get(node.nodeId), { state: 'ALIVE' });
  await node.stop();
  await eventually('its record DEAD', async () => (await nodes.get(node.nodeId))?.state === 'DEAD', 10_000);
  await eventually('the DEAD node to be forgotten', async () => (await nodes.get(node.nodeId)) === undefined, 20_000);
  t.false((await c.status()).nodes.some((n) => n.nodeId === node.nodeId));
  t.like(await nodes.get(c.nodeIds[0]), { state: 'ALIVE' }, 'the live node is kept');
});

/** Starts test/fixtures/silent-driver.ts on this cluster and returns what it printed, and its process to kill. The
 * process is killed when the test ends, whichever way: one left running keeps the test runner from exiting. */
async function silentDriver(t: ExecutionContext, mode: string[]) {
  const root = join(import.meta.dirname, '..', '..');
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', '--conditions=troupe-source', join(root, 'test', 'fixtures', 'silent-driver.ts'), ...mode],
    { cwd: root, env: { ...process.env, TROUPE_HOME: cluster().home, TROUPE_ADDRESS: '', TROUPE_TOKEN: '' } },
  );
  t.teardown(() => {
    child.kill('SIGKILL');
  });
  let out = '';
  let err = '';
  child.stderr.on('data', (d) => {
    err += d;
  });
  const first = await new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('\n')) resolve(out.split('\n')[0]);
    });
    child.on('close', (code) => reject(new Error(`the driver exited (${code}) first: ${out}${err.slice(-3000)}`)));
  });
  return { child, ...(JSON.parse(first) as { jobId: string; actorId: string; value: number }) };
}

test('a job whose driver died is marked FAILED, then forgotten; one with a live detached actor is kept', async (t) => {
  t.timeout(90_000);
  const { jobs } = await currentCore().gcs();
  const [gone, keeps] = await Promise.all([silentDriver(t, []), silentDriver(t, ['detached'])]);
  gone.child.kill('SIGKILL');
  keeps.child.kill('SIGKILL');
  const failed = await eventually("the dead driver's job marked FAILED", async () => {
    const info = await jobs.get(gone.jobId);
    return info?.state === 'FAILED' && info;
  });
  t.regex(failed.cause ?? '', /went silent/);
  await eventually('the ended job forgotten', async () => (await jobs.get(gone.jobId)) === undefined, 30_000);
  // Its registration is gone too: its id may be registered again (before, "registered already").
  const job = { id: gone.jobId, driver: currentCore().procId, root: cluster().home };
  t.deepEqual(await currentCore().bus.request(subjects.headJobRegister, { job }), { registered: gone.jobId });

  // The detached actor outlives its driver, and keeps its job (it restarts from that job's root).
  const detached = await getActor<Counter>('outlives-its-driver');
  t.is(await detached.value(), 5);
  t.like(await jobs.get(keeps.jobId), { state: 'FAILED' });
  await t.throwsAsync(currentCore().bus.request(subjects.headJobRegister, { job: { ...job, id: keeps.jobId } }), {
    instanceOf: ProtocolError,
    message: /registered already/,
  });
  await kill(detached);
  await eventually('the job forgotten once its last actor is dead', async () => !(await jobs.get(keeps.jobId)), 30_000);
});
