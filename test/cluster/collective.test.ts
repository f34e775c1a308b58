// Collectives among actors: allreduce (recursive doubling and ring) for 1 to 4 members and odd sizes (several chunks
// too), tensors, broadcast, barrier, the error a member sees when another never comes, and lanes between members.
import test from 'ava';
import { dirname } from 'node:path';
import { CollectiveError, TaskError, kill, type ActorHandle } from '../../runtime/index.ts';
import { useCluster } from '../helpers/cluster.ts';
import { currentCore } from '../../runtime/core/core.ts';
import { subjects } from '../../runtime/protocol/subjects.ts';
import { Peer } from '../fixtures/collective.ts';

useCluster(test, { head: { numCpus: 2 } });

/** Compared as bytes: ava's deepEqual walks a 1.3M-element array for seconds; a mismatch still shows its diff. */
function sameFloats(t: import('ava').ExecutionContext, actual: unknown, expected: Float32Array, msg?: string): void {
  const bytes = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
  if (actual instanceof Float32Array && bytes(actual).equals(bytes(expected))) t.pass(msg);
  else t.deepEqual(actual, expected, msg);
}

let groups = 0;
/** n members in one group, each in its own process when `processes`, else sharing one (cheaper). */
async function group(
  t: import('ava').ExecutionContext,
  n: number,
  o: { processes?: boolean; timeoutMs?: number } = {},
): Promise<Array<ActorHandle<Peer>>> {
  const name = `g${groups++}`;
  const peers = Array.from({ length: n }, () =>
    Peer.options({ isolation: o.processes ? 'process' : 'shared' }).remote(),
  );
  t.teardown(() => Promise.all(peers.map((p) => kill(p).catch(() => undefined))));
  await Promise.all(peers.map((p, rank) => p.join(name, rank, n, o.timeoutMs)));
  return peers;
}

test.serial('allreduce gives every member the element-wise sum, for 1 to 4 members and odd sizes', async (t) => {
  t.timeout(120_000);
  for (const n of [1, 2, 3, 4]) {
    const peers = await group(t, n, { processes: n === 3 });
    for (const length of [1, 7, 1001, 1_300_001]) {
      // the last is 5.2 MB: segments of several chunks (max_payload 1 MB)
      const results = await Promise.all(peers.map((p) => p.allreduce(length, 'sum')));
      const expected = Float32Array.from({ length }, (_, i) => (1000 * (n * (n - 1))) / 2 + n * (i % 97));
      for (const [rank, r] of results.entries()) sameFloats(t, r, expected, `n=${n} length=${length} rank=${rank}`);
    }
  }
});

test.serial('allreduce with mean and max; tensors come back as tensors of the same shape', async (t) => {
  const peers = await group(t, 3);
  const mean = await Promise.all(peers.map((p) => p.allreduce(4, 'mean')));
  t.deepEqual(Array.from(mean[2]), [1000, 1001, 1002, 1003]);
  const max = await Promise.all(peers.map((p) => p.allreduce(2, 'max')));
  t.deepEqual(Array.from(max[0]), [2000, 2001]);
  const tensors = await Promise.all(peers.map((p) => p.allreduceTensor()));
  t.deepEqual(tensors[1].values, [3, 6, 9, 12, 15, 3]);
  t.deepEqual(tensors[1].shape, [2, 3]);
  // The process chose the best backend that loads, and the head knows it (troupe list actors shows it).
  t.is(tensors[0].backend, 'wasm');
  const info = await (await currentCore().gcs()).actors.get(peers[0].actorId);
  t.true(info?.backend?.startsWith(tensors[0].backend), info?.backend);
});

test.serial("broadcast sends the root's value to all; barrier returns only once every member has come", async (t) => {
  const peers = await group(t, 3);
  const b = await Promise.all(peers.map((p) => p.broadcast(1)));
  for (const r of b) t.deepEqual(Array.from(r), [11, 11, 11, 11, 11]);
  const start = Date.now();
  const done = await Promise.all(peers.map((p, i) => p.barrier(i === 2 ? 600 : 0)));
  for (const at of done) t.true(at - start >= 550, `left the barrier ${at - start} ms after the start`);
});

test.serial(
  'a member that never comes fails the others with CollectiveError, naming the group and the rank',
  async (t) => {
    const peers = await group(t, 3, { timeoutMs: 800 });
    const e = await t.throwsAsync(Promise.all(peers.slice(0, 2).map((p) => p.allreduce(10, 'sum'))), {
      instanceOf: TaskError,
    });
    t.is(e!.remoteName, CollectiveError.name);
    t.regex(e!.message, /group g\d+, rank [01] of 3: collective failed/);
  },
);

test.serial(
  'members in processes of their own send to each other on their lanes, not through nats-server',
  async (t) => {
    const peers = await group(t, 2, { processes: true });
    const before = await Promise.all(peers.map((p) => p.lanes()));
    t.deepEqual(
      before.map((l) => l.to),
      [
        [undefined, undefined],
        [undefined, undefined],
      ],
      'nothing is routed before the first acknowledgement names a lane',
    );
    for (const length of [1001, 1_300_001]) {
      const [a, b] = await Promise.all(peers.map((p) => p.allreduce(length, 'sum')));
      sameFloats(
        t,
        a,
        Float32Array.from({ length }, (_, i) => 1000 + 2 * (i % 97)),
      );
      sameFloats(t, b, a);
    }
    const [l0, l1] = await Promise.all(peers.map((p) => p.lanes()));
    t.truthy(l0.own);
    t.is(l0.to[1], l1.own);
    t.is(l1.to[0], l0.own);
  },
);

test.serial('a lane an acknowledgement names is taken only if it is a worker socket of the same node', async (t) => {
  const name = `g${groups++}`;
  const peer = Peer.remote();
  t.teardown(() => kill(peer).catch(() => undefined));
  await peer.join(name, 0, 2, 5000);
  const own = (await peer.lanes()).own!;
  const named: unknown[] = [
    '/var/run/docker.sock',
    `${dirname(own)}/../lane-1`,
    `${dirname(own)}/not-a-lane`,
    `${dirname(own)}/lane-1/x`,
    42,
    null,
  ];
  // This process plays rank 1: its acknowledgements name each path in turn.
  let ack: unknown;
  const sub = currentCore().bus.serveBatched(subjects.collective(name, 1), () => ack);
  t.teardown(() => sub.unsubscribe());
  for (const lane of named) {
    ack = { lane };
    await peer.broadcast(0); // root 0 sends to rank 1, this process
    t.is((await peer.lanes()).to[1], undefined, `followed ${JSON.stringify(lane)}`);
  }
  // The same check lets a socket of its own node through (a lane to a worker that is gone goes back to NATS).
  ack = { lane: `${dirname(own)}/lane-1` };
  await peer.broadcast(0);
  t.is((await peer.lanes()).to[1], `${dirname(own)}/lane-1`);
});
