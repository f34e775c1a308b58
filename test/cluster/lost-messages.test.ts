// Core NATS delivers at most once: a message can be lost while both ends live (a reconnect; a slow consumer, which
// nats-server cuts off, dropping what it had queued for it). A task or actor call whose request was lost so must
// still settle: its caller, hearing nothing, asks the worker which it holds (TROUPE_CALL_PROBE_MS, 1 s here) and runs
// the lost one again, or fails it with CallLostError; a get asks the object's owner again. The loss here is real: the
// worker is stopped (SIGSTOP) while junk on its subject fills its socket (test/helpers/slow-consumer.ts), the request
// queues behind the junk in nats-server, and the server cuts the worker off once a write to it has waited 10 s (its
// write_deadline), dropping what it queued. Actor calls on one machine go on a lane (a Unix socket, which loses
// nothing): this file's are sent through nats-server (TROUPE_LANES=0), as between machines.
import test from 'ava';
import { get, CallLostError } from '../../runtime/index.ts';
import { Bus } from '../../runtime/bus/bus.ts';
import { defaults } from '../../runtime/base/config.ts';
import { subjects } from '../../runtime/protocol/subjects.ts';
import { useCluster } from '../helpers/cluster.ts';
import { CUT_AFTER_MS, fillTheWay } from '../helpers/slow-consumer.ts';
import { add, putHere } from '../fixtures/tasks.ts';
import { Tally } from '../fixtures/link-loss-actors.ts';

// Read from TROUPE_CALL_PROBE_MS and TROUPE_LANES when config.ts loads, before this line: set here, before init().
defaults.callProbeMs = 1000;
defaults.lanes = false;
// Two CPUs: a task found lost may run again on a second worker while the first still holds its lease.
const cluster = useCluster(test, { head: { numCpus: 2 } });

test('a task and a locate the bus dropped: the task is found lost and runs again, the get asks again', async (t) => {
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
});

test('an actor call whose request the bus dropped fails with CallLostError; the actor keeps serving', async (t) => {
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
});
