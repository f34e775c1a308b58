// Several drivers on one cluster: detached actors outlive their driver, owned ones do not;
// each driver sees what its tasks and actors print, prefixed like Ray's "(Counter pid=1234)".
import test from 'ava';
import { join } from 'node:path';
import { init, shutdown, getActor, kill, UsageError } from '../runtime/index.ts';
import { startCluster, runCommand, type TestCluster } from './helpers/cluster.ts';
import type { Counter } from './fixtures/actors.ts';

let c: TestCluster;
test.before(async () => {
  c = await startCluster({ head: { numCpus: 2 } });
  await init();
});
test.after.always(async () => {
  await shutdown();
  await c?.stop();
});

const root = join(import.meta.dirname, '..');
const otherDriver = (env: Record<string, string> = {}) =>
  runCommand(process.execPath, ['--import', 'tsx', 'test/fixtures/actor-driver.ts'], { cwd: root, env: { TROUPE_HOME: c.home, ...env } });

test.serial('a detached actor outlives its driver; an owned one ends with it; output reaches the driver that owns the work', async (t) => {
  const r = await otherDriver();
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /^\(Counter pid=\d+\) hello from keeper$/m);
  t.regex(r.stdout, /^\(shout pid=\d+\) hello from a task$/m);
  t.regex(r.stderr, /^\(shout pid=\d+\) hello from a task \(on stderr\)$/m);
  const ids = JSON.parse(r.stdout.split('\n').find((l) => l.startsWith('{'))!) as { keeper: string; ephemeral: string; value: number };
  t.is(ids.value, 1);

  const keeper = await getActor<Counter>('keeper');
  t.is(keeper.actorId, ids.keeper);
  t.is(await keeper.value(), 42);
  await t.throwsAsync(getActor('ephemeral'), { instanceOf: UsageError });
  const info = await (await import('../runtime/client.ts')).currentClient().gcs().then((g) => g.actors.get(ids.ephemeral));
  t.is(info?.state, 'DEAD');
  t.regex(info?.cause ?? '', /owner shut down/);
  await kill(keeper);
});

test.serial('init({ logToDriver: false }) keeps worker output out of the driver', async (t) => {
  const r = await otherDriver({ QUIET: '1' });
  t.is(r.code, 0, r.stderr);
  t.notRegex(r.stdout, /hello from/);
  await kill(await getActor('keeper'));
});
