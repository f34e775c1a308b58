// Failures: a killed node daemon is declared dead, a killed worker fails its task with the cause (or the task runs
// again, within maxRetries), garbage on every subject leaves every daemon running.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { connect } from '@nats-io/transport-node';
import { join } from 'node:path';
import { get, InfeasibleError, WorkerDiedError, TaskError, UsageError } from '../../runtime/index.ts';
import { useCluster, eventually, isAlive, processesWithHome, tempDir, type TestCluster } from '../helpers/cluster.ts';
import { Bus } from '../../runtime/bus/bus.ts';
import { Gcs } from '../../runtime/state/gcs.ts';
import { encode } from '../../runtime/base/codec.ts';
import { subjects } from '../../runtime/protocol/subjects.ts';
import { currentCore } from '../../runtime/core/core.ts';
import { add, hold, env, flaky } from '../fixtures/tasks.ts';
import type { TaskEvent } from '../../runtime/protocol/tasks.ts';
import type { JobRef } from '../../runtime/protocol/jobs.ts';
import { malformedCounts } from '../../runtime/protocol/check.ts';
import { defaults } from '../../runtime/base/config.ts';
import { Counter } from '../fixtures/actors.ts';
import { fuzzTargets, mutations, wrapped } from '../helpers/fuzz.ts';

// A node timeout of 6 s, set explicitly: a killed node daemon is declared dead in 6 s, not the default 15 s; and not
// 2 s, which the junk flood below, on a loaded 2-core machine, once used up on two healthy nodes (fenced them).
const cluster = useCluster(test, {
  head: { numCpus: 2 },
  nodes: [{ numCpus: 1, resources: { victim: 1 } }],
  nodeTimeoutMs: 6000,
});
let c: TestCluster;
let bus: Bus;
test.serial.before(async () => {
  c = cluster();
  bus = await Bus.connect({ address: c.address, token: c.headToken, name: 'test-probe' }); // may send anything
});
test.serial.after.always(async () => {
  await bus?.close();
});

async function runningTask(name: string): Promise<TaskEvent> {
  return eventually(`task ${name} running`, async () =>
    (await bus.request<TaskEvent[]>(subjects.headTasks, {})).find((e) => e.name === name && e.state === 'RUNNING'),
  );
}

/** The node's row once it is ALIVE again (after it was fenced, it joins as a new incarnation). */
const aliveAgain = (nodeId: string) =>
  eventually(
    'the node ALIVE again',
    async () => (await c.status()).nodes.find((n) => n.nodeId === nodeId && n.state === 'ALIVE'),
    30_000,
  );

test.serial('garbage on every troupe subject gets error replies, and every daemon keeps running', async (t) => {
  const workerId = (await bus.gather<Array<{ owner: string }>>(subjects.allObjects, {}, 300))
    .flat()
    .map((o) => o.owner)[0];
  const targets = [
    subjects.headLease,
    subjects.headStatus,
    subjects.headTasks,
    ...c.nodeIds.flatMap((n) => [
      subjects.nodeLease(n),
      subjects.nodeRelease(n),
      subjects.nodeObjects(n),
      ...['read', 'free', 'seal', 'restore', 'fetch', 'touch'].map((op) => `troupe.node.${n}.obj.${op}`),
    ]),
    ...['locate', 'read', 'borrow', 'copied'].map((op) => `troupe.proc.${currentCore().procId}.obj.${op}`),
    subjects.evtProcExited,
    subjects.hbNode(c.nodeIds[1]),
    subjects.hbProc('x'),
    subjects.evtTasks,
    subjects.evtNodeDied,
    subjects.evtWorkerDied,
    subjects.allObjects,
    ...(workerId ? [subjects.procTask(workerId)] : []),
  ];
  const junk = [
    new Uint8Array(0),
    randomBytes(64),
    new TextEncoder().encode('{"not":"msgpack"'),
    encode('a string'),
    encode(null),
    encode([1, 2, 3]),
    encode({ demand: 'lots', clientId: 7 }),
    encode({ reqId: 'r', clientId: 'c', demand: { CPU: -5 } }),
    encode({ id: '../../../etc/passwd', offset: 0, length: 10 }),
    encode({ leaseId: { $gt: '' } }),
    encode({
      taskId: 't',
      fn: { url: 'file:///etc/passwd', exportName: 'x' },
      args: encode([]),
      deps: {},
      workingDir: '/',
    }),
  ];
  const raw = bus.nc;
  for (let round = 0; round < 20; round++) for (const s of targets) for (const j of junk) raw.publish(s, j);
  // Requests with a reply subject get an answer, an error rather than silence.
  for (const s of [subjects.headLease, subjects.nodeLease(c.nodeIds[0]), `troupe.node.${c.nodeIds[0]}.obj.read`]) {
    await t.throwsAsync(bus.request(s, { id: '../../../etc/passwd', offset: 0, length: 10 }));
  }
  await raw.flush();
  for (const pid of processesWithHome(c.home)) t.true(isAlive(pid));
  const nodes = (await c.status()).nodes;
  t.is(
    nodes.filter((n) => n.alive).length,
    2,
    JSON.stringify(nodes.map((n) => ({ node: n.nodeId, alive: n.alive, cause: n.cause }))),
  );
  t.is(await add.remote(20, 22), 42);
});

test.serial('schema-aware junk on every subject is refused and counted; the cluster keeps serving', async (t) => {
  const counter = Counter.remote(0);
  t.is(await counter.add(1), 1);
  t.is(await add.remote(1, 1), 2);
  const workerId = (await bus.request<TaskEvent[]>(subjects.headTasks, {})).find((e) => e.workerId)!.workerId;
  const refused = async () => {
    const s = await c.status();
    const sum = (m: Record<string, number> | undefined) => Object.values(m ?? {}).reduce((a, b) => a + b, 0);
    return {
      head: sum(s.malformed),
      nodes: s.nodes.map((n) => sum(n.malformed)),
      driver: sum(malformedCounts()),
      term: s.lease?.term ?? 0,
    };
  };
  const before = await refused();
  const targets = fuzzTargets({
    nodeIds: c.nodeIds,
    driver: currentCore().procId,
    workerId,
    actorId: counter.actorId,
    actorWorkerId: (await (await currentCore().gcs()).actors.get(counter.actorId))!.workerId!,
    job: currentCore().job as JobRef,
    term: before.term,
  });
  let sent = 0;
  for (const target of targets) {
    for (const m of mutations(target.base)) {
      // Half ask for an answer (to an id of our inbox nobody waits on), half are events.
      const reply = sent++ % 2 ? `${bus.inbox}.fuzz` : undefined;
      bus.nc.publish(target.subject, encode(wrapped(target, m)), reply ? { reply } : undefined);
    }
    // One subject at a time, paced by round trips to every daemon (each answers after the junk before it): with this
    // file's 2 s node timeout, a flood faster than a loaded machine can take would fence a healthy node.
    await bus.request(subjects.headStatus, {});
    for (const n of c.nodeIds) await bus.request(subjects.nodeActors(n), {});
  }
  t.log(`${sent} malformed variants on ${new Set(targets.map((x) => x.subject)).size} subjects`);
  for (const pid of processesWithHome(c.home)) t.true(isAlive(pid));
  const after = await eventually('the nodes to count what they refused', async () => {
    const r = await refused();
    return r.nodes.every((n, i) => n > before.nodes[i]) && r;
  });
  t.true(after.head > before.head, JSON.stringify({ before, after }));
  t.true(after.driver > before.driver);
  t.is((await c.status()).nodes.filter((n) => n.alive).length, 2);
  t.is(await add.remote(20, 22), 42);
  t.is(await counter.add(1), 2);
  t.is(await Counter.remote(5).add(1), 6);
});

test.serial('a killed worker fails its running task with WorkerDiedError naming the cause', async (t) => {
  const ref = hold.options({ name: 'doomed', maxRetries: 0 }).remote(60_000);
  const running = await runningTask('doomed');
  process.kill(running.pid, 'SIGKILL');
  const e = await t.throwsAsync(get(ref), { instanceOf: WorkerDiedError });
  t.regex(e!.message, /SIGKILL/);
  t.regex(e!.message, new RegExp(`pid ${running.pid}`));
  t.is(await add.remote(1, 2), 3); // and the next task gets a fresh worker
});

test.serial('a task whose worker dies runs again (maxRetries, default 3) until its retries are used up', async (t) => {
  const ref = hold.options({ name: 'phoenix' }).remote(1500);
  const first = await runningTask('phoenix');
  process.kill(first.pid, 'SIGKILL');
  const done = await get(ref);
  t.not(done.pid, first.pid, 'the second run is on a fresh worker');

  const once = hold.options({ name: 'twice-killed', maxRetries: 1 }).remote(60_000);
  const a = await runningTask('twice-killed');
  process.kill(a.pid, 'SIGKILL');
  const b = await eventually('the retry running', async () =>
    (await bus.request<TaskEvent[]>(subjects.headTasks, {})).find(
      (e) => e.name === 'twice-killed' && e.state === 'RUNNING' && e.pid !== a.pid,
    ),
  );
  process.kill(b.pid, 'SIGKILL');
  const e = await t.throwsAsync(get(once), { instanceOf: WorkerDiedError });
  t.regex(e!.message, /it ran 2 times/);
});

test.serial(
  'retryExceptions retries the errors it names, within maxRetries; bad retry options fail where written',
  async (t) => {
    const dir = tempDir(t);
    t.is(await flaky.options({ retryExceptions: ['RangeError'], maxRetries: 2 }).remote(join(dir, 'a'), 2), 3);
    await t.throwsAsync(get(flaky.options({ retryExceptions: ['TypeError'] }).remote(join(dir, 'b'), 1)), {
      instanceOf: TaskError,
      message: /run 1 fails/,
    });
    // not retried by default
    await t.throwsAsync(get(flaky.remote(join(dir, 'c'), 1)), { instanceOf: TaskError, message: /run 1 fails/ });
    await t.throwsAsync(get(flaky.options({ retryExceptions: true, maxRetries: 1 }).remote(join(dir, 'd'), 5)), {
      instanceOf: TaskError,
      message: /run 2 fails/,
    });
    t.throws(() => flaky.options({ maxRetries: -2 }), { instanceOf: UsageError, message: /maxRetries/ });
    t.throws(() => flaky.options({ retryExceptions: 'yes' as unknown as boolean }), {
      instanceOf: UsageError,
      message: /retryExceptions/,
    });
  },
);

test.serial(
  'a node paused past the timeout is fenced: its workers stop, and it joins again as a new incarnation',
  async (t) => {
    t.timeout(90_000);
    const victim = c.nodeIds[1];
    const daemon = c.nodes[0].pids[0];
    const before = (await c.status()).nodes.find((n) => n.nodeId === victim)!;
    const ref = hold.options({ resources: { victim: 1 }, name: 'on-paused', maxRetries: 0 }).remote(60_000);
    const running = await runningTask('on-paused');
    process.kill(daemon, 'SIGSTOP'); // a partition, as the head sees it: silence
    try {
      const e = await t.throwsAsync(get(ref), { instanceOf: WorkerDiedError }); // declared dead after 6 s
      t.regex(e!.message, new RegExp(victim));
    } finally {
      process.kill(daemon, 'SIGCONT');
    }
    // Back, it hears that it was fenced: its work was given up on, so its worker goes before it serves again.
    await eventually('its old worker gone', async () => !isAlive(running.pid));
    const back = await aliveAgain(victim);
    t.not(back.startedAt, before.startedAt, 'a new incarnation');
    t.is(back.pid, daemon, 'the same daemon process');
    const gcs = await Gcs.open(bus);
    t.like(await gcs.nodes.get(victim), { state: 'ALIVE', startedAt: back.startedAt });
    t.is((await get(env.options({ resources: { victim: 1 } }).remote())).node, victim, 'work places on it again');
  },
);

test.serial(
  'an actor restarted elsewhere while its node is paused: its old instance, still running, gets none of its calls',
  async (t) => {
    t.timeout(90_000);
    const victim = c.nodeIds[1];
    const daemon = c.nodes[0].pids[0];
    const gcs = await Gcs.open(bus);
    // Over NATS, as from another machine: a lane goes to one process only.
    const lanes = defaults.lanes;
    defaults.lanes = false;
    t.teardown(() => {
      defaults.lanes = lanes;
    });
    const counter = Counter.options({ schedulingStrategy: { nodeId: victim, soft: true }, maxRestarts: 1 }).remote(100);
    t.is(await counter.add(1), 101);
    const old = (await gcs.actors.get(counter.actorId))!;
    t.like(old, { nodeId: victim, incarnation: 0 });
    process.kill(daemon, 'SIGSTOP'); // its worker runs on: only the daemon is silent
    try {
      const moved = await eventually('the actor ALIVE on the head node', async () => {
        const a = await gcs.actors.get(counter.actorId);
        return a?.state === 'ALIVE' && a.incarnation === 1 && a;
      });
      t.is(moved.nodeId, c.nodeIds[0]);
      // The new instance started from 100 again: an answer from the old one (at 101 and counting) would show.
      for (let i = 1; i <= 20; i++) t.is(await counter.add(1), 100 + i);
      t.true(isAlive(old.pid!), 'the old instance was still running all along');
    } finally {
      process.kill(daemon, 'SIGCONT');
    }
    await eventually('the old instance stopped', async () => !isAlive(old.pid!));
    await aliveAgain(victim);
  },
);

test.serial('a killed node daemon is marked dead; its task fails; the rest of the cluster goes on', async (t) => {
  const victim = c.nodeIds[1];
  const ref = hold.options({ resources: { victim: 1 }, name: 'on-victim', maxRetries: 0 }).remote(60_000);
  const running = await runningTask('on-victim');
  t.is(running.nodeId, victim);
  process.kill(c.nodes[0].pids[0], 'SIGKILL');
  const e = await t.throwsAsync(get(ref), { instanceOf: WorkerDiedError });
  t.regex(e!.message, new RegExp(victim));
  const dead = await eventually('the node DEAD in status', async () =>
    (await c.status()).nodes.find((n) => n.nodeId === victim && !n.alive),
  );
  t.regex(dead.cause ?? '', /no heartbeat/);
  const gcs = await Gcs.open(bus);
  t.is((await gcs.nodes.get(victim))?.state, 'DEAD');
  await eventually('its worker gone too', async () => !isAlive(running.pid));
  // Work that needs the dead node's resource is now infeasible; other work runs.
  await t.throwsAsync(get(env.options({ resources: { victim: 1 } }).remote()), { instanceOf: InfeasibleError });
  t.is((await env.remote()).node, c.nodeIds[0]);
});

test.serial('a client without the token, or with a wrong one, is refused', async (t) => {
  const [host, port] = c.address.split(':');
  await t.throwsAsync(connect({ servers: `${host}:${port}`, reconnect: false }), { message: /Authorization/i });
  await t.throwsAsync(connect({ servers: `${host}:${port}`, token: 'wrong', reconnect: false }), {
    message: /Authorization/i,
  });
  await t.throwsAsync(Bus.connect({ address: c.address, token: 'wrong', name: 'intruder' }), {
    name: 'AuthenticationError',
    message: /refused the token/,
  });
});
