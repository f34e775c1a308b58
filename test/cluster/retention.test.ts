// The head forgets DEAD actors after TROUPE_DEAD_ACTOR_RETENTION_MS (an hour by default; 3 s here), so the state of a
// long-lived cluster stays bounded; a live actor is kept however old it is.
import test from 'ava';
import { get, kill, ActorDiedError } from '../../runtime/index.ts';
import { useCluster, eventually } from '../helpers/cluster.ts';
import { currentCore } from '../../runtime/core/core.ts';
import { Counter } from '../fixtures/actors.ts';

process.env.TROUPE_DEAD_ACTOR_RETENTION_MS = '3000'; // read by the head daemon this file's cluster starts
useCluster(test, { head: { numCpus: 1 } });

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
