// Attacks on the bus handlers: a msgpack nil as the answer to a driver's request, a malformed lease sent straight to a
// node, a flood of `demand: {}` leases. They are sent with the head's identity, the one role the permissions let send
// all of them: what is tested here is that a malformed message from a sender that may send it harms nothing. Each is
// refused while the cluster keeps serving tasks and actor calls.
import test from 'ava';
import { readdirSync, readFileSync } from 'node:fs';
import { ProtocolError, WorkerLimitError } from '../../runtime/index.ts';
import { useCluster, eventually, isAlive, processesWithHome, type TestCluster } from '../helpers/cluster.ts';
import type { Msg } from '@nats-io/transport-node';
import { Bus } from '../../runtime/bus/bus.ts';
import { subjects } from '../../runtime/protocol/subjects.ts';
import { currentCore } from '../../runtime/core/core.ts';
import type { JobRef } from '../../runtime/protocol/jobs.ts';
import type { Busy, LeaseGrant } from '../../runtime/protocol/leases.ts';
import { add } from '../fixtures/tasks.ts';
import { Counter } from '../fixtures/actors.ts';

// A small cap, set before the daemons start (they read it from the environment they inherit).
const CAP = 4;
process.env.TROUPE_MAX_WORKERS_PER_NODE = String(CAP);
const cluster = useCluster(test, { head: { numCpus: 2 } });
let c: TestCluster;
/** The attacker: a connection of its own, with the head's credential. */
let evil: Bus;
test.serial.before(async () => {
  c = cluster();
  evil = await Bus.connect({ address: c.address, token: c.headToken, name: 'test-attacker' });
});
test.serial.after.always(async () => {
  await evil?.close();
  delete process.env.TROUPE_MAX_WORKERS_PER_NODE;
});

/** The cluster still serves: a task and an actor call. */
async function stillServes(t: import('ava').ExecutionContext): Promise<void> {
  t.is(await add.remote(20, 22), 42);
  const counter = Counter.remote(1);
  t.is(await counter.add(2), 3);
  for (const pid of processesWithHome(c.home)) t.true(isAlive(pid));
}

/** Worker processes of this cluster alive now. */
function workerCount(): number {
  let n = 0;
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const env = `${readFileSync(`/proc/${name}/environ`, 'utf8')}\0`;
      // The worker process itself, not a child that inherited its environment (tsx's esbuild service, say).
      const worker = /\/worker\/worker\.[jt]s\0/.test(readFileSync(`/proc/${name}/cmdline`, 'utf8'));
      if (worker && env.includes(`TROUPE_HOME=${c.home}\0`) && env.includes('TROUPE_WORKER_ID=')) n++;
    } catch {
      /* gone */
    }
  }
  return n;
}

function job(): JobRef {
  const j = currentCore().job!;
  return { id: j.id, driver: j.driver, root: j.root };
}

test.serial(
  'a nil reply fails that request at once with ProtocolError; the driver keeps hearing replies',
  async (t) => {
    const subject = subjects.actorCall('p1', '0123456789abcdef0123', 0); // a subject a driver may ask
    // Answers every request with a msgpack nil (0xc0), as a rogue process on a subject a driver asks would.
    const nil = (_e: unknown, m: Msg): void => {
      m.respond(new Uint8Array([0xc0]));
    };
    const sub = evil.nc.subscribe(subject, { callback: nil });
    const gatherSub = evil.nc.subscribe(subjects.allObjects, { callback: nil });
    await evil.nc.flush();
    try {
      const core = currentCore();
      // No timeout: before the fix this waited for ever (the reply threw inside nats.js's callback).
      const e = await t.throwsAsync(core.bus.request(subject, {}, { timeoutMs: 0 }), { instanceOf: ProtocolError });
      t.regex(e!.message, /malformed reply/);
      for (let i = 0; i < 3; i++) await t.throwsAsync(core.bus.request(subject, {}, { timeoutMs: 0 }));
      // A scatter-gather drops the nil and still gathers the good answers.
      t.true(Array.isArray(await core.bus.gather(subjects.allObjects, {}, 300)));
      await stillServes(t);
    } finally {
      sub.unsubscribe();
      gatherSub.unsubscribe();
    }
  },
);

test.serial('a malformed lease is refused before the node reserves anything; a later good lease works', async (t) => {
  const node = c.nodeIds[0];
  const status = await c.status();
  const total = status.nodes.find((n) => n.nodeId === node)!.total.CPU!;
  const term = status.lease!.term; // the leading head's: each is bad for its own reason
  const bad = [
    { clientId: evil.inbox.slice(7), job: job(), demand: { CPU: 1 }, actor: {}, term },
    { clientId: 'x', job: job(), demand: { CPU: 1 }, actor: { spec: null, incarnation: 0 }, term },
    { clientId: 'x', job: job(), demand: { CPU: 1 }, actor: { spec: { isolation: 'shared' }, incarnation: 0 }, term },
    { clientId: 'x', job: job(), demand: { CPU: Number.NaN }, term },
    { clientId: 'x', job: job(), demand: { CPU: 1 }, replyWithinMs: 'soon', term },
    { clientId: 'x', job: job(), demand: { CPU: 1 } },
  ];
  for (const lease of bad) await t.throwsAsync(evil.request(subjects.nodeLease(node), lease, { timeoutMs: 10_000 }));
  // The node's whole CPU can still be leased (before the fix, each bad lease kept one CPU for ever).
  const grant = await eventually(
    'a lease of all the node CPUs',
    async () => {
      const r = await evil.request<LeaseGrant | Busy>(subjects.nodeLease(node), {
        clientId: currentCore().procId,
        job: job(),
        demand: { CPU: total },
        replyWithinMs: 20_000,
        term,
      });
      return 'busy' in r ? undefined : r;
    },
    20_000,
  );
  t.truthy(grant.leaseId);
  await evil.request(subjects.nodeRelease(node), { leaseId: grant.leaseId });
  // In status once the node's next heartbeat tells the head: the refusals counted, and every CPU free again.
  await eventually('the refusals counted and all CPUs free in status', async () => {
    const n = (await c.status()).nodes.find((x) => x.nodeId === node);
    return (n?.malformed?.['lease request'] ?? 0) >= 1 && n?.available.CPU === total;
  });
  await stillServes(t);
});

test.serial(
  'a flood of demand: {} leases never runs more workers than the cap; the cluster keeps serving',
  async (t) => {
    const node = c.nodeIds[0];
    const term = (await c.status()).lease!.term;
    const asks = Array.from({ length: 20 }, () =>
      evil
        .request<LeaseGrant | Busy>(
          subjects.nodeLease(node),
          { clientId: currentCore().procId, job: job(), demand: {}, replyWithinMs: 30_000, term },
          { timeoutMs: 30_000 },
        )
        .then(
          (r) => ({ r }),
          (e: Error) => ({ e }),
        ),
    );
    // The most worker processes seen while the flood is answered.
    let most = workerCount();
    const sampler = setInterval(() => {
      most = Math.max(most, workerCount());
    }, 50);
    const answers = await Promise.all(asks).finally(() => clearInterval(sampler));
    t.true(most <= CAP, `${most} workers at once`);
    const refused = answers.flatMap((a) => ('e' in a ? [a.e] : []));
    t.true(refused.length >= 20 - CAP);
    for (const e of refused) t.true(e instanceof WorkerLimitError, String(e));
    // The leases go back; the cluster serves again within its cap.
    for (const a of answers) if ('r' in a && 'leaseId' in a.r) evil.publish(subjects.nodeRelease(node), a.r);
    await evil.flush();
    await stillServes(t);
    t.true(workerCount() <= CAP, `${workerCount()} workers`);
  },
);
