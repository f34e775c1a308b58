// Several drivers on one cluster: detached actors outlive their driver, owned ones do not;
// each driver sees what its tasks and actors print, prefixed like Ray's "(Counter pid=1234)".
import test from 'ava';
import { join } from 'node:path';
import { getActor, kill, UsageError } from '../../runtime/index.ts';
import { useCluster, runCommand, eventually } from '../helpers/cluster.ts';
import type { Counter } from '../fixtures/actors.ts';

// Drivers silent for 3 s are taken for dead (10 s by default): the daemons started below inherit this.
process.env.TROUPE_CLIENT_TIMEOUT_MS = '3000';
const cluster = useCluster(test, { head: { numCpus: 2 } });

const root = join(import.meta.dirname, '..', '..');
const otherDriver = (env: Record<string, string> = {}) =>
  runCommand(process.execPath, ['--import', 'tsx', '--conditions=troupe-source', 'test/fixtures/actor-driver.ts'], {
    cwd: root,
    env: { TROUPE_HOME: cluster().home, ...env },
  });

test.serial(
  'a detached actor outlives its driver; an owned one ends with it; output reaches the driver that owns the work',
  async (t) => {
    const r = await otherDriver();
    t.is(r.code, 0, r.stderr);
    t.regex(r.stdout, /^\(Counter pid=\d+\) hello from keeper$/m);
    t.regex(r.stdout, /^\(shout pid=\d+\) hello from a task$/m);
    t.regex(r.stdout, /^\(shout pid=\d+\) hello from a nested task$/m); // submitted by a worker, printed here
    t.regex(r.stderr, /^\(shout pid=\d+\) hello from a task \(on stderr\)$/m);
    const ids = JSON.parse(r.stdout.split('\n').find((l) => l.startsWith('{'))!) as {
      keeper: string;
      ephemeral: string;
      value: number;
    };
    t.is(ids.value, 1);

    const keeper = await getActor<Counter>('keeper');
    t.is(keeper.actorId, ids.keeper);
    t.is(await keeper.value(), 42);
    await t.throwsAsync(getActor('ephemeral'), { instanceOf: UsageError });
    // made by a task of that driver: gone with it
    await t.throwsAsync(getActor('made-in-task'), { instanceOf: UsageError });
    const info = await (await import('../../runtime/core/core.ts'))
      .currentCore()
      .gcs()
      .then((g) => g.actors.get(ids.ephemeral));
    t.is(info?.state, 'DEAD');
    t.regex(info?.cause ?? '', /owner shut down/);
    // The CLI shows both, with states and causes.
    const cli = [join(root, 'runtime', 'cli', 'troupe.mjs'), 'list', 'actors'];
    const listed = JSON.parse(
      (await runCommand(process.execPath, [...cli, '--json'], { env: { TROUPE_HOME: cluster().home } })).stdout,
    ) as Array<{ actorId: string; state: string; name: string; cause?: string }>;
    t.like(
      listed.find((a) => a.actorId === ids.keeper),
      { state: 'ALIVE', name: 'default/keeper' },
    );
    t.like(
      listed.find((a) => a.actorId === ids.ephemeral),
      { state: 'DEAD', cause: 'its owner shut down' },
    );
    const table = (await runCommand(process.execPath, cli, { env: { TROUPE_HOME: cluster().home } })).stdout;
    t.regex(table, /ACTORID\s+CLASSNAME\s+STATE/);
    t.regex(table, new RegExp(`${ids.ephemeral}\\s+Counter\\s+DEAD`));
    await kill(keeper);
  },
);

test.serial('init({ logToDriver: false }) keeps worker output out of the driver', async (t) => {
  const r = await otherDriver({ QUIET: '1' });
  t.is(r.code, 0, r.stderr);
  t.notRegex(r.stdout, /hello from/);
  await kill(await getActor('keeper'));
});

test.serial(
  'a driver whose event loop is busy for longer than the silence timeout keeps its actors; one killed loses them',
  async (t) => {
    const r = await runCommand(
      process.execPath,
      ['--import', 'tsx', '--conditions=troupe-source', 'test/fixtures/busy-driver.ts'],
      {
        cwd: root,
        env: { TROUPE_HOME: cluster().home, BUSY_MS: '6000' },
      },
    );
    t.is(r.signal, 'SIGKILL', r.stderr);
    const out = JSON.parse(r.stdout.split('\n').find((l) => l.startsWith('{'))!) as { actorId: string; value: number };
    t.is(out.value, 2, 'its actor answered after 6 s of a blocked loop');
    const gcs = await (await import('../../runtime/core/core.ts')).currentCore().gcs();
    await eventually(
      'the actor of the killed driver ended',
      async () => (await gcs.actors.get(out.actorId))?.state === 'DEAD',
    );
    t.regex((await gcs.actors.get(out.actorId))?.cause ?? '', /its owner \w+ died \(silent for \d+ ms\)/);
  },
);
