// Core NATS delivers at most once: a message can be lost while both ends live (a reconnect; a slow consumer, which
// nats-server cuts off, dropping what it had queued for it). A task or actor call whose request was lost so must
// still settle: its caller, hearing nothing, asks the worker which it holds (TROUPE_CALL_PROBE_MS, 1 s here) and runs
// the lost one again, or fails it with CallLostError; a get asks the object's owner again. The loss here is real: the
// worker is stopped (SIGSTOP) while junk on its subject fills its socket (test/helpers/slow-consumer.ts), the request
// queues behind the junk in nats-server, and the server cuts the worker off once a write to it has waited 10 s (its
// write_deadline), dropping what it queued. Actor calls on one machine go on a lane (a Unix socket, which loses
// nothing): this file's are sent through nats-server (TROUPE_LANES=0), as between machines. An actor start has no
// deadline (a constructor may run for minutes): the head asks the node again while its answer is late, and the node
// joins the repeat to the first start.
import test from 'ava';
import { get, wait, CallLostError } from '../../runtime/index.ts';
import { currentCore } from '../../runtime/core/core.ts';
import { Bus } from '../../runtime/bus/bus.ts';
import { defaults } from '../../runtime/base/config.ts';
import { subjects } from '../../runtime/protocol/subjects.ts';
import { useCluster } from '../helpers/cluster.ts';
import { CUT_AFTER_MS, fillTheWay } from '../helpers/slow-consumer.ts';
import { add, fill, putHere } from '../fixtures/tasks.ts';
import { Tally } from '../fixtures/link-loss-actors.ts';
import { SlowStart } from '../fixtures/actors.ts';

// Read from TROUPE_CALL_PROBE_MS and TROUPE_LANES when config.ts loads, before this line: set here, before init().
defaults.callProbeMs = 1000;
defaults.lanes = false;
// The daemons read them when they start. A node stopped for the actor start test stays placeable and alive meanwhile.
process.env.TROUPE_CALL_PROBE_MS = '1000';
process.env.TROUPE_NODE_SUSPECT_MS = '40000';
process.env.TROUPE_NODE_TIMEOUT_MS = '60000';
// Two CPUs: a task found lost may run again on a second worker while the first still holds its lease.
// A second node holds an object the fetch test reads from the first (`near`: what runs on the first).
const cluster = useCluster(test, {
  head: { numCpus: 2, resources: { near: 4 } },
  nodes: [{ numCpus: 1, resources: { far: 1 } }],
});

test.serial(
  'a task and a locate the bus dropped: the task is found lost and runs again, the get asks again',
  async (t) => {
    t.timeout(90_000);
    // Our lease's worker (the next task goes to it), which also owns an object now.
    const made = await get(putHere.remote(7));
    // Another connection floods, so that our own stays free to send the task and the locate.
    const flooder = await Bus.connect({ address: cluster().address, token: cluster().token, name: 'test-flooder' });
    process.kill(made.pid, 'SIGSTOP');
    try {
      await fillTheWay(flooder, subjects.procTask(made.procId));
      const sum = add.remote(1, 2); // both queued in nats-server behind the junk
      const value = get(made.ref);
      await new Promise((r) => setTimeout(r, CUT_AFTER_MS)); // nats-server cuts the worker off, dropping them
      process.kill(made.pid, 'SIGCONT');
      t.deepEqual(await Promise.all([get(sum), value]), [3, 7], 'the task ran again; the owner, asked again, answered');
    } finally {
      process.kill(made.pid, 'SIGCONT');
      await flooder.close();
    }
  },
);

test.serial(
  'an actor call whose request the bus dropped fails with CallLostError; the actor keeps serving',
  async (t) => {
    t.timeout(90_000);
    const tally = Tally.remote();
    const first = await tally.add(1);
    const flooder = await Bus.connect({ address: cluster().address, token: cluster().token, name: 'test-flooder' });
    process.kill(first.pid, 'SIGSTOP');
    try {
      await fillTheWay(flooder, subjects.actor(tally.actorId));
      const lost = tally.add(10); // queued in nats-server behind the junk
      await new Promise((r) => setTimeout(r, CUT_AFTER_MS)); // nats-server cuts the actor's process off, dropping it
      process.kill(first.pid, 'SIGCONT');
      const e = await t.throwsAsync(get(lost), { instanceOf: CallLostError });
      t.regex(e?.message ?? '', /add\(\) on actor \w+: its request or its answer was lost on the way/);
      t.like(await tally.add(0), { total: 1, pid: first.pid }, 'the lost call never ran; the same instance serves on');
    } finally {
      process.kill(first.pid, 'SIGCONT');
      await flooder.close();
    }
  },
);

test.serial('an actor start the bus dropped: the head asks its node again, and one instance comes up', async (t) => {
  t.timeout(90_000);
  const nodePid = cluster().head.pids.at(-1)!; // the head's machine's node daemon: [nats-server, head, node]
  const flooder = await Bus.connect({ address: cluster().address, token: cluster().headToken, name: 'test-flooder' });
  process.kill(nodePid, 'SIGSTOP');
  try {
    await fillTheWay(flooder, subjects.obj.nodeTouch(cluster().nodeIds[0]));
    // The head's lease request for it queues in nats-server behind the junk. It takes 3 s to start, so the head asks
    // the node again (every 1 s) while the node starts it, and the node its worker.
    const slow = SlowStart.options({ resources: { near: 1 } }).remote(3000);
    await new Promise((r) => setTimeout(r, CUT_AFTER_MS)); // nats-server cuts the node off, dropping the request
    process.kill(nodePid, 'SIGCONT');
    t.like(await slow.made(), { constructed: 1 }, 'its worker made one instance');
    t.like(await (await currentCore().gcs()).actors.get(slow.actorId), { state: 'ALIVE', restarts: 0 });
    const held = await flooder.request<string[]>(subjects.nodeActors(cluster().nodeIds[0]), {});
    t.deepEqual(
      held.filter((id) => id === slow.actorId),
      [slow.actorId],
      'its node holds one lease for it',
    );
  } finally {
    process.kill(nodePid, 'SIGCONT');
    await flooder.close();
  }
});

test.serial('a fetch the bus dropped: the reader asks its node again, and the copy is made', async (t) => {
  t.timeout(90_000);
  const far = fill.options({ resources: { far: 1 } }).remote(200_000, 1); // 800 KB, in the other node's store
  await wait([far]);
  const nodePid = cluster().head.pids.at(-1)!;
  const flooder = await Bus.connect({ address: cluster().address, token: cluster().headToken, name: 'test-flooder' });
  process.kill(nodePid, 'SIGSTOP');
  try {
    await fillTheWay(flooder, subjects.obj.nodeTouch(cluster().nodeIds[0]));
    const value = get(far); // our node is asked to fetch a copy: the request queues behind the junk
    await new Promise((r) => setTimeout(r, CUT_AFTER_MS)); // nats-server cuts the node off, dropping it
    process.kill(nodePid, 'SIGCONT');
    const got = await value;
    t.is(got.length, 200_000);
    t.true(got.every((x) => x === 1));
  } finally {
    process.kill(nodePid, 'SIGCONT');
    await flooder.close();
  }
});
