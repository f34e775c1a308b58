// Standby heads: one head leads, by a lease in KV taken and renewed by compare-and-set; a standby (`troupe start
// --head --address` with a head credential) takes over when the leader dies or stops renewing, with a newer fencing
// term, and nodes refuse what a deposed head still sends.
import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Bus } from '../../runtime/bus/bus.ts';
import { subjects } from '../../runtime/protocol/subjects.ts';
import { StaleHeadError } from '../../runtime/base/errors.ts';
import { startStandbyHead } from '../../runtime/cluster/local-cluster.ts';
import { isAlive } from '../../runtime/base/processes.ts';
import type { HeadStatus } from '../../runtime/protocol/cluster.ts';
import { useCluster, eventually } from '../helpers/cluster.ts';
import { addIdentity } from '../../runtime/cluster/identities.ts';
import { pushAccount } from '../../runtime/cluster/account-update.ts';
import { Phoenix } from '../fixtures/actors.ts';
import { currentCore } from '../../runtime/core/core.ts';
import { add } from '../fixtures/tasks.ts';

const cluster = useCluster(test, { head: { numCpus: 2 } });

type Standby = Awaited<ReturnType<typeof startStandbyHead>>;
const standbys: Standby[] = [];
const stopped: number[] = [];
test.after.always(async () => {
  for (const pid of stopped) if (isAlive(pid)) process.kill(pid, 'SIGCONT');
  await Promise.all(standbys.map((s) => s.stop()));
});

/** A head credential, made as `troupe token create --role head` makes one (the CLI's own path is in cli.test.ts), and
 * a standby head started with it. */
async function startStandby(name: string): Promise<Standby> {
  const c = cluster();
  const id = addIdentity(c.head.sessionDir, 'head', name);
  await pushAccount({ sessionDir: c.head.sessionDir, address: c.address });
  const s = await startStandbyHead({ detached: false, address: c.address, token: id.credential });
  standbys.push(s);
  return s;
}

const log = (s: Standby) => readFileSync(join(s.sessionDir, 'logs', 'head.log'), 'utf8');
type Lease = NonNullable<HeadStatus['lease']>;
/** The lease of the head answering status, once it is not `old` any more. */
const newLeader = (old: Lease) =>
  eventually(
    'a new head to lead',
    async () => {
      const lease = (await cluster().status()).lease;
      return lease && lease.headId !== old.headId && lease;
    },
    20_000,
  );

test.serial(
  'a standby leads within seconds once the leader is killed; calls, tasks and new actors go on',
  async (t) => {
    const c = cluster();
    const standby = await startStandby('standby-1');
    t.regex(log(standby), /standby head: head \w+ on .* leads with term 1/);
    const status = await eventually('the leader to list its standby', async () => {
      const s = await c.status();
      return s.standbys?.some((x) => x.pid === standby.pids[0]) && s;
    });
    const first = status.lease!;
    t.is(first.term, 1);
    t.is(first.pid, c.head.pids[1], 'the first head leads');
    t.deepEqual(status.warnings, [], 'one machine: no single point of failure to warn of');

    const actor = Phoenix.remote();
    t.is((await actor.bump()).calls, 1);
    // Calls all through the takeover: the head is not on an actor call's path.
    let calls = 1;
    let failed = 0;
    let going = true;
    const caller = (async () => {
      while (going)
        await actor.bump().then(
          () => calls++,
          () => failed++,
        );
    })();

    process.kill(c.head.pids[1], 'SIGKILL');
    const since = Date.now();
    const lease = await newLeader(first);
    t.log(`the standby led ${Date.now() - since} ms after the leader was killed`);
    t.is(lease.term, 2);
    t.is(lease.pid, standby.pids[0]);
    t.regex(log(standby), /up and leading with term 2/);
    t.deepEqual((await c.status()).standbys, [], 'a standby that leads is no longer listed as one');

    t.is(await add.remote(2, 3), 5, 'a task leased by the new head');
    const second = Phoenix.remote();
    t.is((await second.bump()).calls, 1, 'an actor placed by the new head');
    going = false;
    await caller;
    t.is(failed, 0);
    t.is((await actor.bump()).calls, calls + 1, 'the first actor kept its state: it never restarted');
  },
);

test.serial('a leader paused past its lease is deposed: nodes refuse its term, and it stands by again', async (t) => {
  const c = cluster();
  const leader = standbys[0];
  const old = (await c.status()).lease!;
  t.is(old.pid, leader.pids[0]);
  const next = await startStandby('standby-2');
  const actor = Phoenix.remote();
  const before = await actor.bump();

  process.kill(leader.pids[0], 'SIGSTOP');
  stopped.push(leader.pids[0]);
  const lease = await newLeader(old);
  t.is(lease.term, old.term + 1);
  t.is(lease.pid, next.pids[0]);

  // What the paused head would still send, with its term: the node refuses it and keeps the actor.
  const bus = await Bus.connect({ address: c.address, token: c.headToken, name: 'standby-head-test' });
  t.teardown(() => bus.close());
  const info = (await c.status()).nodes[0];
  const job = { id: 'stale', driver: 'stale', root: '/nonexistent' };
  await t.throwsAsync(
    bus.request(subjects.nodeLease(info.nodeId), { clientId: 'stale', job, demand: { CPU: 1 }, term: old.term }),
    { instanceOf: StaleHeadError, message: /term 2: the head leading now has term 3/ },
  );
  await t.throwsAsync(
    bus.request(subjects.nodeActorStop(info.nodeId), {
      actorId: (actor as unknown as { actorId: string }).actorId,
      term: old.term,
    }),
    { instanceOf: StaleHeadError },
  );
  t.is((await actor.bump()).calls, before.calls + 1, 'the actor was not stopped');
  // Created while the old head is paused: it gets the request too (both heads listen), and handles it on waking
  // unless it checks its lease first: it would store the actor again as PENDING, over the new head's record.
  const during = Phoenix.remote();
  t.is((await during.bump()).calls, 1);

  process.kill(leader.pids[0], 'SIGCONT');
  await eventually('the old head to stand by', async () =>
    /no longer leads: head \w+ on .* took the lease \(term 3\); it stands by[\s\S]*standby head:/.test(log(leader)),
  );
  const after = await eventually('the old head listed as a standby', async () => {
    const s = await c.status();
    return s.standbys?.some((x) => x.pid === leader.pids[0]) && s;
  });
  t.is(after.lease?.term, 3, 'the new head still leads');
  const record = await (await currentCore().gcs()).actors.get((during as unknown as { actorId: string }).actorId);
  t.like(record, { state: 'ALIVE', incarnation: 0 }, 'the deposed head wrote nothing');
  t.is((await during.bump()).calls, 2);
  t.is(await add.remote(1, 1), 2);
});
