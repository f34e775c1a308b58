// Remote actors on two node daemons: ordering, concurrency, errors, names, kill and restart, GPUs, strategies.
import test from 'ava';
import {
  get,
  getActor,
  kill,
  ActorDiedError,
  TaskError,
  UsageError,
  InfeasibleError,
  type ActorHandle,
  type ObjectRef,
} from '../../runtime/index.ts';
import { useCluster, eventually } from '../helpers/cluster.ts';
import { currentCore } from '../../runtime/core/core.ts';
import { Counter, Gate, Broken, Forwarder, Phoenix, Doomed, Journal } from '../fixtures/actors.ts';
import { callCounter } from '../fixtures/tasks.ts';

const cluster = useCluster(test, { head: { numCpus: 2, numGpus: 0 }, nodes: [{ numCpus: 2, numGpus: 2 }] });
let headNode: string, gpuNode: string;
test.serial.before(() => {
  [headNode, gpuNode] = cluster().nodeIds;
});

const actorInfo = async (actorId: string) => (await currentCore().gcs()).actors.get(actorId);

test.serial('1,000 calls sent without awaiting run in submission order', async (t) => {
  const counter = Counter.remote(0);
  const refs = Array.from({ length: 1000 }, () => counter.add(1));
  const values = await get(refs);
  t.deepEqual(
    values,
    Array.from({ length: 1000 }, (_, i) => i + 1),
  );
  t.is(await counter.value(), 1000);
  const info = await actorInfo(counter.actorId);
  t.is(info?.state, 'ALIVE');
  t.is(info?.className, 'Counter');
});

test.serial(
  'a long run of calls made in one go reaches the actor in parts, while the caller is still making them',
  async (t) => {
    const counter = Counter.remote(0);
    await counter.value();
    // A caller busy for about 500 ms making 1,000 calls without yielding: the first calls must not wait for it to
    // finish.
    const refs: ObjectRef<[number, number]>[] = [];
    const started = Date.now();
    for (let i = 0; i < 1000; i++) {
      refs.push(counter.addAt(1));
      while (Date.now() - started < (i + 1) * 0.5) {
        /* busy */
      }
    }
    const madeAll = Date.now();
    const answers = await get(refs);
    t.deepEqual(
      answers.map(([n]) => n),
      Array.from({ length: 1000 }, (_, i) => i + 1),
    ); // in order across the parts
    t.true(answers[0][1] < madeAll - 250, `the first call ran ${madeAll - answers[0][1]} ms before the last was made`);
  },
);

test.serial('maxConcurrency bounds how many async calls interleave; the default runs one at a time', async (t) => {
  const gate = Gate.remote();
  const peaks = await get(Array.from({ length: 8 }, () => gate.hold(150)));
  t.is(Math.max(...peaks), 3);
  const serial = Gate.options({ maxConcurrency: 1 }).remote();
  t.is(Math.max(...(await get(Array.from({ length: 4 }, () => serial.hold(50))))), 1);
});

test.serial('a method that throws fails only that call, with the remote stack; the actor lives on', async (t) => {
  const counter = Counter.remote(5);
  const e = await t.throwsAsync(get(counter.fail('no such thing')), { instanceOf: TaskError });
  t.is(e!.remoteName, 'TypeError');
  t.is(e!.where, 'Counter.fail');
  t.regex(e!.remoteStack, /fixtures\/actors\.ts/);
  t.is(await counter.add(1), 6);
  const missing = await t.throwsAsync(get((counter as unknown as { nope(): ObjectRef<unknown> }).nope()), {
    instanceOf: TaskError,
  });
  t.regex(missing!.message, /has no method 'nope'/);
});

test.serial('what a method returns is awaited when it is a promise or a ref: its caller gets the value', async (t) => {
  const counter = Counter.remote(1);
  t.is(await counter.add(1), 2); // plain in, plain out
  t.is(await counter.addAll([1, 2], { k: 3 }), 8); // encoded arguments, a ref returned
  t.is(await counter.slowAdd(2, 5), 10); // a promise returned
  t.is(await counter.addAt(0).then(([n]) => n), 10); // a value that is not plain
});

test.serial(
  'a constructor that throws leaves the actor DEAD, and callers get ActorDiedError with the cause',
  async (t) => {
    const broken = Broken.remote();
    const e = await t.throwsAsync(get((broken as unknown as ActorHandle<Counter>).value()), {
      instanceOf: ActorDiedError,
    });
    t.regex(e!.message, /constructor threw RangeError: no config/);
    const info = await actorInfo(broken.actorId);
    t.is(info?.state, 'DEAD');
    t.regex(info?.cause ?? '', /no config/);
  },
);

test.serial(
  'named actors: getActor from anywhere, names unique per namespace, freed when the actor dies',
  async (t) => {
    const a = Counter.options({ name: 'shared-counter' }).remote(100);
    const again = await getActor<Counter>('shared-counter');
    t.is(await again.add(1), 101);
    t.is(await a.value(), 101);
    const dup = Counter.options({ name: 'shared-counter' }).remote(0);
    await t.throwsAsync(get(dup.value()), { instanceOf: UsageError, message: /already exists in namespace 'default'/ });
    const other = Counter.options({ name: 'shared-counter', namespace: 'team-b' }).remote(7);
    t.is(await (await getActor<Counter>('shared-counter', { namespace: 'team-b' })).value(), 7);
    await kill(a);
    await t.throwsAsync(getActor('shared-counter'), {
      instanceOf: UsageError,
      message: /no live actor named 'shared-counter'/,
    });
    await kill(other);
    t.throws(() => Counter.options({ name: 'bad name!' }), { instanceOf: UsageError });
  },
);

test.serial(
  'kill: noRestart ends it; without, a restartable actor comes back with the same handle, id and name',
  async (t) => {
    const dead = Counter.remote(1);
    await dead.value();
    await kill(dead);
    const e = await t.throwsAsync(get(dead.value()), { instanceOf: ActorDiedError });
    t.regex(e!.message, /killed by kill\(\)/);

    const phoenix = Phoenix.options({ name: 'phoenix' }).remote();
    const first = await phoenix.bump();
    await kill(phoenix, { noRestart: false });
    const second = await phoenix.bump(); // waits while it restarts
    t.is(second.calls, 1); // a fresh instance
    t.not(second.pid, first.pid);
    const info = await actorInfo(phoenix.actorId);
    t.is(info?.restarts, 1);
    t.is((await getActor<Phoenix>('phoenix')).actorId, phoenix.actorId);
    await kill(phoenix);
  },
);

test.serial(
  'a crashed actor restarts within maxRestarts; calls in flight fail, or are retried with maxTaskRetries',
  async (t) => {
    const p = Phoenix.remote();
    const { pid } = await p.bump();
    const inFlight = p.sleepThenBump(5000);
    await new Promise((r) => setTimeout(r, 200));
    process.kill(pid, 'SIGKILL');
    const e = await t.throwsAsync(get(inFlight), { instanceOf: ActorDiedError });
    t.regex(e!.message, /sleepThenBump/);
    t.is((await p.bump()).calls, 1); // restarted
    const info = await actorInfo(p.actorId);
    t.regex(info?.cause ?? '', new RegExp(`pid ${pid}\\) was killed by SIGKILL`));
    // Out of restarts: the next crash is final, and says so.
    p.crash(4);
    const final = await eventually('DEAD', async () => {
      const i = await actorInfo(p.actorId);
      return i?.state === 'DEAD' && i;
    });
    t.regex(final.cause ?? '', /exited with code 4.*used all 1 restart/);
    await t.throwsAsync(get(p.bump()), { instanceOf: ActorDiedError, message: /exited with code 4/ });

    const r = Phoenix.options({ maxRestarts: -1, maxTaskRetries: -1 }).remote();
    const victim = (await r.bump()).pid;
    const retried = r.sleepThenBump(1500);
    await new Promise((res) => setTimeout(res, 200));
    process.kill(victim, 'SIGKILL');
    t.is(await retried, 1); // re-sent to the new instance
    await kill(r);
  },
);

test.serial('calls re-sent after a crash keep their submission order, before newer calls', async (t) => {
  const j = Journal.remote();
  const firstPid = await j.log(-1);
  const refs = Array.from({ length: 30 }, (_, i) => j.log(i));
  await new Promise((r) => setTimeout(r, 100)); // some ran, the rest wait in the actor's queue
  process.kill(firstPid, 'SIGKILL');
  for (let i = 30; i < 60; i++) {
    refs.push(j.log(i));
    await new Promise((r) => setTimeout(r, 5));
  }
  const pids = await get(refs); // every call answered (retried where needed)
  t.is(pids.length, 60);
  const history = await j.history(); // the new instance's view
  t.deepEqual(
    history,
    [...history].sort((a, b) => a - b),
  );
  t.is(history.at(-1), 59);
  await kill(j);
});

test.serial('fractional GPUs: two 0.5-GPU actors share a device; a 1-GPU actor gets its own', async (t) => {
  const a = Counter.options({ numGpus: 0.5 }).remote();
  const b = Counter.options({ numGpus: 0.5 }).remote();
  const whole = Counter.options({ numGpus: 1 }).remote();
  const [pa, pb, pw] = await get([a.pid(), b.pid(), whole.pid()]);
  t.is(pa.node, gpuNode);
  t.is(pa.gpus, pb.gpus);
  t.not(pa.pid, pb.pid);
  t.not(pw.gpus, pa.gpus);
  t.true(['0', '1'].includes(pw.gpus!));
  await t.throwsAsync(get(Counter.options({ numGpus: 3 }).remote().value()), { instanceOf: InfeasibleError });
  for (const h of [a, b, whole]) await kill(h);
});

test.serial('SPREAD places actors on different nodes; DEFAULT packs small ones together', async (t) => {
  const spread = [
    Counter.options({ numCpus: 0.5, schedulingStrategy: 'SPREAD' }).remote(),
    Counter.options({ numCpus: 0.5, schedulingStrategy: 'SPREAD' }).remote(),
  ];
  const sn = (await get(spread.map((h) => h.pid()))).map((p) => p.node);
  t.deepEqual([...sn].sort(), [headNode, gpuNode].sort());
  for (const h of spread) await kill(h);
  await eventually('CPUs free again', async () => (await cluster().status()).nodes.every((n) => n.available.CPU === 2));
  const packed = [Counter.options({ numCpus: 0.5 }).remote(), Counter.options({ numCpus: 0.5 }).remote()];
  const pn = (await get(packed.map((h) => h.pid()))).map((p) => p.node);
  t.is(pn[0], pn[1]);
  for (const h of packed) await kill(h);
});

test.serial('handles work as arguments to tasks and to other actors', async (t) => {
  const counter = Counter.remote(0);
  t.is(await callCounter.remote(counter, 5), 5);
  const fwd = Forwarder.remote();
  t.is(await fwd.forward(counter, 10), 15);
  t.is(await fwd.sum([counter.add(1), counter.add(1)]), 33);
});

test.serial("'shared' isolation hosts many actors in one worker process", async (t) => {
  const many = Array.from({ length: 50 }, (_, i) => Counter.options({ isolation: 'shared' }).remote(i));
  const answers = await get(many.map((h) => h.add(1)));
  t.deepEqual(
    answers,
    Array.from({ length: 50 }, (_, i) => i + 1),
  );
  const pids = new Set((await get(many.map((h) => h.pid()))).map((p) => p.pid));
  t.is(pids.size, 1);
  await kill(many[0]);
  t.is(await many[1].value(), 2); // the others in that process live on
});

test.serial(
  'a constructor that kills its process ends the actor with that cause, and its resources come back',
  async (t) => {
    const d = Doomed.remote();
    const e = await t.throwsAsync(get((d as unknown as ActorHandle<Counter>).value()), { instanceOf: ActorDiedError });
    t.regex(e!.message, /exited with code 7 while the constructor ran/);
    await eventually('all CPUs free again', async () =>
      (await cluster().status()).nodes.every((n) => n.available.CPU === n.total.CPU),
    );
    t.true((await cluster().status()).nodes.every((n) => n.available.CPU === n.total.CPU));
  },
);

test.serial('two creates racing for one name: exactly one actor gets it', async (t) => {
  const a = Counter.options({ name: 'race' }).remote(1);
  const b = Counter.options({ name: 'race' }).remote(2);
  const results = await Promise.allSettled([get(a.value()), get(b.value())]);
  t.deepEqual(results.map((r) => r.status).sort(), ['fulfilled', 'rejected']);
  t.regex(String((results.find((r) => r.status === 'rejected') as PromiseRejectedResult).reason), /already exists/);
  await kill(await getActor('race'));
});

test.serial('killing a shared actor fails the calls still queued for it; none is left hanging', async (t) => {
  const slow = Phoenix.options({ isolation: 'shared' }).remote();
  const calls = Array.from({ length: 10 }, () => slow.sleepThenBump(200));
  await new Promise((r) => setTimeout(r, 300));
  await kill(slow);
  const settled = await Promise.allSettled(calls.map((c) => get(c)));
  const failed = settled.filter((r) => r.status === 'rejected');
  t.true(failed.length >= 7);
  for (const f of failed) t.true((f as PromiseRejectedResult).reason instanceof ActorDiedError);
});

test.serial('bad actor options fail where they are written', (t) => {
  t.throws(() => Counter.options({ maxRestarts: -2 }), { instanceOf: UsageError, message: /maxRestarts/ });
  t.throws(() => Counter.options({ maxConcurency: 2 } as never), {
    instanceOf: UsageError,
    message: /unknown actor option 'maxConcurency'/,
  });
  t.throws(() => Counter.options({ isolation: 'thread' } as never), { instanceOf: UsageError });
  t.throws(() => Counter.options({ schedulingStrategy: { node: 'x' } } as never), {
    instanceOf: UsageError,
    message: /schedulingStrategy/,
  });
  t.throws(() => Counter.remote((() => 1) as unknown as number), { name: 'SerializationError' });
});
