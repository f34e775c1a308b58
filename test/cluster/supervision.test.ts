// Supervisors (OTP semantics): strategies, restart types, intensity and escalation, backoff, nested trees, dynamic
// children, a supervisor that survives its own death; crashOnError, checkpoints, the bounded queue of calls.
import test from 'ava';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import {
  startSupervisor,
  kill,
  ActorDiedError,
  TaskError,
  PendingCallsLimitError,
  UsageError,
  type ActorHandle,
  type SupervisorHandle,
} from '../../runtime/index.ts';
import { useCluster, eventually, tempDir, checkpointStoreOf } from '../helpers/cluster.ts';
import { currentCore } from '../../runtime/core/core.ts';
import { Member, NeverStarts, Tally } from '../fixtures/supervised.ts';

const cluster = useCluster(test, { head: { numCpus: 2 } });

type Info = Awaited<ReturnType<Member['info']>>;
const infos = async (sup: SupervisorHandle, ids: string[]): Promise<Info[]> =>
  Promise.all(ids.map(async (id) => (await sup.child<Member>(id)).info()));
const stateOf = async (actorId: string) => (await (await currentCore().gcs()).actors.get(actorId))!;
/** Crashes a child as its process dying would: the head holds it for its supervisor. */
const crash = (h: { actorId: string }) => currentCore().killActor(h.actorId, false, 'crashed on purpose');

// Cheap children: many lightweight actors in one worker process.
const member = (id: string, more: Record<string, unknown> = {}) => ({
  id,
  actor: Member,
  args: [id] as [string],
  options: { isolation: 'shared' as const },
  ...more,
});

test.serial(
  'one_for_one: a child killed with SIGKILL comes back with the same id and handle; its siblings are untouched',
  async (t) => {
    cluster();
    const sup = await startSupervisor({
      strategy: 'one_for_one',
      children: [member('a'), { id: 'b', actor: Member, args: ['b'] }, member('c')],
    });
    t.teardown(() => sup.shutdown().catch(() => undefined));
    const b = await sup.child<Member>('b');
    const before = await infos(sup, ['a', 'b', 'c']);
    await b.inc();
    process.kill(before[1].pid, 'SIGKILL');
    // Calls made while it restarts wait for the new instance.
    await eventually('b restarting', async () => (await stateOf(b.actorId)).state !== 'ALIVE');
    const after = await b.info();
    t.is(after.actorId, b.actorId);
    t.not(after.pid, before[1].pid);
    t.is(after.n, 0, 'a new instance, fresh state');
    const [a, , c] = await infos(sup, ['a', 'b', 'c']);
    t.is(a.startedAt, before[0].startedAt);
    t.is(c.startedAt, before[2].startedAt);
    const children = await sup.whichChildren();
    t.deepEqual(
      children.map((x) => [x.id, x.state, x.restarts]),
      [
        ['a', 'ALIVE', 0],
        ['b', 'ALIVE', 1],
        ['c', 'ALIVE', 0],
      ],
    );
    t.true((await stateOf(b.actorId)).cause!.includes('SIGKILL'), (await stateOf(b.actorId)).cause);
  },
);

test.serial('one_for_all restarts every child; rest_for_one the failed one and those started after it', async (t) => {
  for (const [strategy, restarted] of [
    ['one_for_all', ['a', 'b', 'c']],
    ['rest_for_one', ['b', 'c']],
  ] as const) {
    const sup = await startSupervisor({ strategy, children: [member('a'), member('b'), member('c')] });
    t.teardown(() => sup.shutdown().catch(() => undefined));
    const before = await infos(sup, ['a', 'b', 'c']);
    await crash(await sup.child('b'));
    await eventually(`${strategy} restarts`, async () =>
      (await sup.whichChildren()).every(
        (x) => x.state === 'ALIVE' && x.restarts === (restarted.includes(x.id as never) ? 1 : 0),
      ),
    );
    const after = await infos(sup, ['a', 'b', 'c']);
    for (const [i, id] of ['a', 'b', 'c'].entries()) {
      t.is(after[i].startedAt !== before[i].startedAt, restarted.includes(id as never), `${strategy}: child ${id}`);
      t.is(after[i].actorId, before[i].actorId);
    }
  }
});

test.serial(
  'restart types: permanent and transient children restart after a crash, a temporary one is dropped; after kill() ' +
    'only the permanent one',
  async (t) => {
    const sup = await startSupervisor({
      children: [
        member('p', { restart: 'permanent' }),
        member('tr', { restart: 'transient' }),
        member('tmp', { restart: 'temporary' }),
      ],
    });
    t.teardown(() => sup.shutdown().catch(() => undefined));
    const tmp = await sup.child<Member>('tmp');
    for (const id of ['p', 'tr', 'tmp']) await crash(await sup.child(id));
    await eventually('restarts', async () => {
      const cs = await sup.whichChildren();
      return cs.length === 2 && cs.every((x) => x.state === 'ALIVE' && x.restarts === 1);
    });
    t.deepEqual(
      (await sup.whichChildren()).map((x) => x.id),
      ['p', 'tr'],
    );
    const e = await t.throwsAsync(tmp.inc(), { instanceOf: ActorDiedError });
    t.regex(e.message, /temporary child is not restarted/);
    // A normal stop by someone else (kill()): the permanent child comes back, the transient one stays stopped.
    const p = await sup.child<Member>('p');
    await kill(p);
    t.is(await p.inc(), 1, 'the permanent child restarted, same handle');
    await kill(await sup.child('tr'));
    await eventually(
      'transient stopped',
      async () => (await sup.whichChildren()).find((x) => x.id === 'tr')!.actorId === undefined,
    );
    await sup.restartChild('tr');
    // terminateChild keeps the spec; restartChild starts it again, as a new actor.
    const tr = await sup.child<Member>('tr');
    await sup.terminateChild('tr');
    t.is((await sup.whichChildren()).find((x) => x.id === 'tr')!.actorId, undefined);
    await t.throwsAsync(tr.inc(), { instanceOf: ActorDiedError, message: /terminateChild/ });
    const again = await sup.restartChild('tr');
    t.not(again.actorId, tr.actorId);
    await t.throwsAsync(sup.deleteChild('tr'), { message: /is running/ });
    await sup.terminateChild('tr');
    await sup.deleteChild('tr');
    t.deepEqual(await sup.countChildren(), { specs: 1, active: 1, supervisors: 0, workers: 1 });
  },
);

test.serial('dynamic children, and bad specs fail where they are written', async (t) => {
  const sup = await startSupervisor({ children: [] });
  t.teardown(() => sup.shutdown().catch(() => undefined));
  const added = await sup.startChild(member('late'));
  t.is(added.state, 'ALIVE');
  t.is(await (await sup.child<Member>('late')).inc(), 1);
  await t.throwsAsync(sup.startChild(member('late')), { instanceOf: TaskError, message: /already has a child 'late'/ });
  await t.throwsAsync(startSupervisor({ strategy: 'one_for_some' as never }), {
    instanceOf: UsageError,
    message: /strategy must be one of/,
  });
  await t.throwsAsync(startSupervisor({ children: [{ id: 'x', actor: Member, restart: 'sometimes' as never }] }), {
    message: /restart must be one of/,
  });
  await t.throwsAsync(startSupervisor({ children: [{ id: 'x', actor: Member, options: { maxRestarts: 2 } }] }), {
    instanceOf: UsageError,
    message: /maxRestarts does not apply/,
  });
  await t.throwsAsync(startSupervisor({ children: [member('d'), member('d')] }), {
    message: /two children with id 'd'/,
  });
  await t.throwsAsync(startSupervisor({ children: [{ id: 'x', actor: class NotRemote {} as never }] }), {
    message: /not a remote actor class/,
  });
  // A child that cannot start fails the start, as OTP's start_link does, and takes nothing with it.
  await t.throwsAsync(startSupervisor({ children: [member('ok'), { id: 'bad', actor: NeverStarts }] }), {
    message: /child 'bad' failed to start: .*always throws/,
  });
});

test.serial(
  'more restarts than the intensity allows: children stop newest first, the supervisor ends, callers learn why',
  async (t) => {
    const stops = tempDir(t);
    const sup = await startSupervisor({
      intensity: 1,
      periodMs: 10_000,
      children: ['a', 'b'].map((id) => member(id, { args: [id, join(stops, id)] })),
    });
    const a = await sup.child<Member>('a');
    await crash(a);
    await eventually('first restart', async () =>
      (await sup.whichChildren()).every((x) => x.state === 'ALIVE' && (x.id !== 'a' || x.restarts === 1)),
    );
    await crash(a);
    const e = await t.throwsAsync(
      eventually('supervisor gone', async () => (await stateOf(sup.actorId)).state === 'DEAD').then(() => a.inc()),
      { instanceOf: ActorDiedError },
    );
    t.regex(e.message, /restart intensity/);
    t.regex((await stateOf(sup.actorId)).cause!, /child 'a' failed .*more than 1 restarts in 10000 ms/);
    t.true(existsSync(join(stops, 'b')), 'b got its onStop()');
  },
);

test.serial(
  'nested trees: a subtree that gives up is restarted afresh by its parent; the parent keeps its other children',
  async (t) => {
    const sup = await startSupervisor({
      strategy: 'one_for_one',
      children: [member('top'), { id: 'sub', supervisor: { intensity: 0, children: [member('leaf')] } }],
    });
    t.teardown(() => sup.shutdown().catch(() => undefined));
    const sub = await sup.childSupervisor('sub');
    const leaf = await sub.child<Member>('leaf');
    const top = await (await sup.child<Member>('top')).info();
    await crash(leaf);
    await eventually(
      'subtree restarted',
      async () =>
        (await sup.whichChildren()).find((x) => x.id === 'sub')!.restarts === 1 &&
        (await sup.whichChildren()).every((x) => x.state === 'ALIVE'),
    );
    const newSub = await sup.childSupervisor('sub');
    t.is(newSub.actorId, sub.actorId, 'the subtree keeps its id');
    const newLeaf = await newSub.child<Member>('leaf');
    t.not(newLeaf.actorId, leaf.actorId, 'started afresh: a new leaf');
    t.is(await newLeaf.inc(), 1);
    t.is((await (await sup.child<Member>('top')).info()).startedAt, top.startedAt);
    await t.throwsAsync(leaf.inc(), { instanceOf: ActorDiedError, message: /gave up/ });
  },
);

test.serial(
  'backoff delays each restart; a supervisor killed with SIGKILL comes back and keeps supervising its children',
  async (t) => {
    const sup = await startSupervisor({ backoff: { minMs: 600, maxMs: 5000 }, children: [member('a')] });
    t.teardown(() => sup.shutdown().catch(() => undefined));
    const a = await sup.child<Member>('a');
    const first = await a.info();
    const crashedAt = Date.now();
    await crash(a);
    const again = await a.info();
    t.true(again.startedAt - crashedAt >= 600, `restarted after ${again.startedAt - crashedAt} ms`);
    // The supervisor's own process dies: the head restarts it, it restores its children from its checkpoint.
    const supPid = (await stateOf(sup.actorId)).pid!;
    process.kill(supPid, 'SIGKILL');
    await eventually('supervisor back', async () => {
      const s = await stateOf(sup.actorId);
      return s.state === 'ALIVE' && s.pid !== supPid;
    });
    const kids = await sup.whichChildren();
    t.is(kids[0].actorId, first.actorId);
    t.is((await a.info()).startedAt, again.startedAt, 'the child kept running meanwhile');
    await crash(a);
    await eventually('supervised after its restart', async () => (await sup.whichChildren())[0].restarts === 2);
    t.is((await a.info()).n, 0);
  },
);

test.serial(
  'crashOnError: a throwing method fails its call and restarts the actor; an unhandled rejection is a crash too',
  async (t) => {
    const sup = await startSupervisor({
      children: [
        member('strict', { crashOnError: true }),
        { id: 'proc', actor: Member, args: ['proc'] },
        member('lax'),
      ],
    });
    t.teardown(() => sup.shutdown().catch(() => undefined));
    const strict = await sup.child<Member>('strict');
    const lax = await sup.child<Member>('lax');
    await strict.inc();
    await lax.inc();
    await t.throwsAsync(strict.fail('bad input'), { instanceOf: TaskError, message: /bad input/ });
    await t.throwsAsync(lax.fail('bad input'), { instanceOf: TaskError });
    t.is(await strict.inc(), 1, 'restarted: fresh state');
    t.is(await lax.inc(), 2, 'without crashOnError only the call failed');
    t.regex((await stateOf(strict.actorId)).cause!, /Member\.fail\(\) threw RangeError: bad input \(crashOnError\)/);
    const proc = await sup.child<Member>('proc');
    const pid = (await proc.info()).pid;
    await proc.rejectLater();
    await eventually('restarted after the unhandled rejection', async () => (await proc.info()).pid !== pid);
    t.is((await sup.whichChildren()).find((x) => x.id === 'proc')!.restarts, 1);
  },
);

test.serial(
  'checkpoints: a restarted actor resumes from its last checkpoint, taken every N calls, every T seconds or on request',
  async (t) => {
    const tally = Tally.options({ maxRestarts: -1, checkpointEvery: { calls: 2 } }).remote() as ActorHandle<Tally>;
    t.teardown(() => kill(tally));
    const restarted = async (pid: number) =>
      eventually('restarted', async () => {
        const s = await tally.state();
        return s.pid !== pid && s;
      });
    await tally.add(1);
    await tally.add(2); // saved: {3, 2}
    const { pid } = await tally.state();
    await tally.add(3); // saved: {6, 3}
    await tally.add(4);
    process.kill(pid, 'SIGKILL');
    const after = await restarted(pid);
    t.deepEqual({ total: after.total, calls: after.calls }, { total: 6, calls: 3 });
    await tally.add(100);
    await tally.saveCheckpoint();
    process.kill(after.pid, 'SIGKILL');
    t.like(await restarted(after.pid), { total: 106, calls: 4 });

    const store = await checkpointStoreOf(t, cluster());
    const timed = Tally.options({ maxRestarts: 1, checkpointEvery: { seconds: 0.2 } }).remote() as ActorHandle<Tally>;
    t.teardown(() => kill(timed));
    await timed.add(7);
    const first = await timed.state();
    await eventually('a timed checkpoint', async () => (await store.load(timed.actorId)) !== undefined);
    process.kill(first.pid, 'SIGKILL');
    t.like(
      await eventually('restarted', async () => {
        const s = await timed.state();
        return s.pid !== first.pid && s;
      }),
      { total: 7, calls: 1 },
    );
    t.throws(() => Tally.options({ checkpointEvery: { calls: 0 } }), { message: /checkpointEvery must be/ });
  },
);

test.serial(
  'calls wait for a (re)starting actor in a bounded queue: one over maxPendingCalls throws at the call',
  async (t) => {
    const h = Member.options({ maxPendingCalls: 3 }).remote('q') as ActorHandle<Member>;
    t.teardown(() => kill(h));
    const queued = [h.inc(), h.inc(), h.inc()];
    t.throws(() => h.inc(), {
      instanceOf: PendingCallsLimitError,
      message: /3 calls already wait .*maxPendingCalls 3/,
    });
    t.deepEqual(await Promise.all(queued), [1, 2, 3]);
    t.is(await h.inc(), 4);
  },
);
