// Core NATS delivers at most once: a message can be lost while both ends live (a reconnect; a slow consumer, which
// nats-server cuts off, dropping what it had queued for it; nats-server's own death). Every call must still settle: its
// caller, hearing nothing, asks the worker which it holds (TROUPE_CALL_PROBE_MS, 1 s here). A lost task runs again; an
// actor call that never arrived (the worker says which of the caller's calls did) is sent again; one whose answer was
// lost gets it again from the worker, which keeps what it answered a while (it ran once; once forgotten, the call fails
// with CallLostError); a get asks the object's owner again; an actor start or an object copy is asked for again, and
// the repeat joins the first. The loss here is real: the receiver is stopped (SIGSTOP) while junk on its subject fills
// its socket (test/helpers/slow-consumer.ts), the message queues behind the junk in nats-server, and the server cuts
// the receiver off once a write to it has waited 10 s (its write_deadline), dropping what it queued; or nats-server is
// killed. Actor calls on one machine go on a lane (a Unix socket, which loses nothing): this file's are sent through
// nats-server (TROUPE_LANES=0), as between machines.
import test from 'ava';
import { get, wait, CallLostError } from '../../runtime/index.ts';
import { currentCore } from '../../runtime/core/core.ts';
import { Bus } from '../../runtime/bus/bus.ts';
import { defaults } from '../../runtime/base/config.ts';
import { subjects } from '../../runtime/protocol/subjects.ts';
import { useCluster } from '../helpers/cluster.ts';
import { loseOnTheWay } from '../helpers/slow-consumer.ts';
import { add, fill, putHere, sleep } from '../fixtures/tasks.ts';
import { Tally } from '../fixtures/link-loss-actors.ts';
import { Counter, SlowStart } from '../fixtures/actors.ts';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

// Read from TROUPE_CALL_PROBE_MS and TROUPE_LANES when config.ts loads, before this line: set here, before init().
defaults.callProbeMs = 1000;
defaults.lanes = false;
// The daemons read them when they start. A node stopped for the actor start test stays placeable and alive meanwhile.
process.env.TROUPE_CALL_PROBE_MS = '1000';
// Workers keep the answers they sent for callers that lost them: here 64 KiB of them, so that a test can make one be
// forgotten.
process.env.TROUPE_KEPT_ANSWER_BYTES = String(64 * 1024);
process.env.TROUPE_NODE_SUSPECT_MS = '40000';
process.env.TROUPE_NODE_TIMEOUT_MS = '60000';
// Two CPUs: a task found lost may run again on a second worker while the first still holds its lease.
// A second node holds an object the fetch test reads from the first (`near`: what runs on the first).
const cluster = useCluster(test, {
  head: { numCpus: 2, resources: { near: 4 } },
  nodes: [{ numCpus: 1, resources: { far: 1 } }],
});
const natsLog = () => join(cluster().head.sessionDir, 'logs', 'nats-server.log');

test.serial(
  'a task and a locate the bus dropped: the task, which never arrived, is sent again; the get asks again',
  async (t) => {
    t.timeout(90_000);
    // Our lease's worker (the next task goes to it), which also owns an object now.
    const made = await get(putHere.remote(7));
    // Another connection floods, so that our own stays free to send the task and the locate.
    const flooder = await Bus.connect({ address: cluster().address, token: cluster().token, name: 'test-flooder' });
    try {
      // Both lost behind the junk. No retries: the worker says the task never arrived, so it is sent again as it is.
      const { sent } = await loseOnTheWay(flooder, natsLog(), made.pid, subjects.procTask(made.procId), () =>
        Promise.all([get(add.options({ maxRetries: 0 }).remote(1, 2)), get(made.ref)]),
      );
      t.deepEqual(await sent, [3, 7], 'the task ran again; the owner, asked again, answered');
    } finally {
      await flooder.close();
    }
  },
);

test.serial('an actor call whose request the bus dropped is sent again: it never arrived; it runs once', async (t) => {
  t.timeout(90_000);
  const tally = Tally.remote();
  const first = await tally.add(1);
  const flooder = await Bus.connect({ address: cluster().address, token: cluster().token, name: 'test-flooder' });
  try {
    const { workerId } = (await (await currentCore().gcs()).actors.get(tally.actorId))!;
    const subject = subjects.actorCall(workerId!, tally.actorId, 0);
    const { sent } = await loseOnTheWay(flooder, natsLog(), first.pid, subject, () => tally.add(10));
    t.like(await get(sent), { total: 11, pid: first.pid }, 'sent again, it ran once, on the same instance');
    t.like(await tally.add(0), { total: 11 });
  } finally {
    await flooder.close();
  }
});

/** Calls the slowAdd of each actor named from another driver, which the test stops so that nats-server cuts it off
 * with the answers queued for it; `meanwhile` runs as it is cut off. How each call ended there, once the driver heard
 * again. */
async function loseTheAnswers<T>(actors: string[], meanwhile: () => T) {
  const driver = spawn(
    process.execPath,
    ['--import', 'tsx', '--conditions=troupe-source', 'test/fixtures/lost-answer-driver.ts', ...actors],
    { env: { ...process.env, TROUPE_LANES: '0' }, stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const exited = new Promise((r) => driver.once('exit', r));
  const lines = createInterface({ input: driver.stdout })[Symbol.asyncIterator]();
  const next = async () => JSON.parse((await lines.next()).value as string);
  const flooder = await Bus.connect({ address: cluster().address, token: cluster().token, name: 'test-flooder' });
  try {
    const { procId } = await next(); // its calls run for 6 s: the answers come behind the junk, and are lost
    const { sent } = await loseOnTheWay(flooder, natsLog(), driver.pid!, subjects.obj.procCopied(procId), meanwhile);
    const ended = (await next()) as Array<{ ended: string; value?: number; message?: string }>;
    await exited;
    return { ended, sent };
  } finally {
    driver.kill('SIGKILL');
    await flooder.close();
  }
}

test.serial(
  'a call whose answer the bus dropped gets it again when its caller asks; one no longer kept fails',
  async (t) => {
    t.timeout(90_000);
    // Two actors, so two workers: each keeps the answers it sent, 64 KiB of them here.
    const kept = Counter.options({ name: 'answered-late', namespace: 'lost-messages' }).remote(0);
    const forgotten = Counter.options({ name: 'answered-forgotten', namespace: 'lost-messages' }).remote(0);
    await Promise.all([kept.add(0), forgotten.add(0)]);
    // Calls of ours queued behind the second lost one: their answers, kept after it, push it out of its worker's room.
    const { ended, sent } = await loseTheAnswers(['answered-late', 'answered-forgotten'], () =>
      Promise.all(Array.from({ length: 5000 }, () => forgotten.pid())),
    );
    t.deepEqual(ended[0], { ended: 'answered', value: 1 }, 'answered again');
    t.is(ended[1].ended, CallLostError.name, 'no longer kept');
    t.regex(
      ended[1].message ?? '',
      /slowAdd\(\) on actor \w+: its answer was lost on the way \(it reached the actor, [^)]*\): it ran/,
    );
    t.is((await sent).length, 5000);
    t.is(await kept.value(), 1, 'it ran once');
    t.is(await forgotten.value(), 1, 'it ran once');
  },
);

test.serial('an actor start the bus dropped: the head asks its node again, and one instance comes up', async (t) => {
  t.timeout(90_000);
  const nodePid = cluster().head.pids.at(-1)!; // the head's machine's node daemon: [nats-server, head, node]
  const flooder = await Bus.connect({ address: cluster().address, token: cluster().headToken, name: 'test-flooder' });
  try {
    // The head's lease request for it is lost behind the junk. It takes 3 s to start, so the head asks the node again
    // (every 1 s) while the node starts it, and the node its worker.
    const { sent: slow } = await loseOnTheWay(
      flooder,
      natsLog(),
      nodePid,
      subjects.obj.nodeTouch(cluster().nodeIds[0]),
      () => SlowStart.options({ resources: { near: 1 } }).remote(3000),
    );
    t.like(await slow.made(), { constructed: 1 }, 'its worker made one instance');
    t.like(await (await currentCore().gcs()).actors.get(slow.actorId), { state: 'ALIVE', restarts: 0 });
    const held = await flooder.request<string[]>(subjects.nodeActors(cluster().nodeIds[0]), {});
    t.deepEqual(
      held.filter((id) => id === slow.actorId),
      [slow.actorId],
      'its node holds one lease for it',
    );
  } finally {
    await flooder.close();
  }
});

test.serial('a fetch the bus dropped: the reader asks its node again, and the copy is made', async (t) => {
  t.timeout(90_000);
  const far = fill.options({ resources: { far: 1 } }).remote(200_000, 1); // 800 KB, in the other node's store
  await wait([far]);
  const nodePid = cluster().head.pids.at(-1)!;
  const flooder = await Bus.connect({ address: cluster().address, token: cluster().headToken, name: 'test-flooder' });
  try {
    // Our node is asked to fetch a copy: the request is lost behind the junk.
    const { sent } = await loseOnTheWay(flooder, natsLog(), nodePid, subjects.obj.nodeTouch(cluster().nodeIds[0]), () =>
      get(far),
    );
    const got = await sent;
    t.is(got.length, 200_000);
    t.true(got.every((x) => x === 1));
  } finally {
    await flooder.close();
  }
});

test.serial('nats-server killed and started again: every call in flight settles, none twice', async (t) => {
  t.timeout(120_000);
  const tally = Tally.remote();
  await tally.add(0);
  const running = sleep.remote(2000); // runs through the restart: its answer is sent while the bus is away
  // Calls and tasks sent as the server dies (they go at the end of this turn, after the kill): lost with it. The
  // actor's worker says which of the caller's calls arrived (`received`): those that never did are sent again.
  const calls = Array.from({ length: 200 }, () => tally.add(1));
  const tasks = Array.from({ length: 50 }, (_, i) => add.remote(i, 1));
  await cluster().restartNats();
  const answers = await Promise.all(calls.map((c) => get(c)));
  t.deepEqual(
    answers.map((a) => a.total),
    Array.from({ length: 200 }, (_, i) => i + 1),
    'each call ran once, in order',
  );
  t.deepEqual(
    await get(tasks),
    tasks.map((_, i) => i + 1),
  );
  await get(running);
  t.like(await (await currentCore().gcs()).actors.get(tally.actorId), { state: 'ALIVE', restarts: 0 });
  // What the head keeps in JetStream survived, and new work places as before.
  t.like(await Tally.remote().add(5), { total: 5 });
  t.is(await get(add.remote(20, 22)), 42);
});
