// The object store: byte bound, spilling, copies across nodes, tensors, reference counting and its errors.
// The tests that need a store of their own start their own cluster; the others share one (after them).
import test from 'ava';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { init, shutdown, put, get, wait } from '../../runtime/api/session.ts';
import { kill } from '../../actors/api.ts';
import { currentCore } from '../../runtime/core/core.ts';
import { subjects } from '../../runtime/protocol/subjects.ts';
import { ObjectLostError, ObjectStoreFullError } from '../../runtime/base/errors.ts';
import { fetchToMemory, makeChunk, chunkSize, type ChunkRequest } from '../../object-store/transfer.ts';
import type { StoredObject, StoreStats } from '../../object-store/store-manager.ts';
import type { ObjectRef } from '../../object-store/object-ref.ts';
import { startCluster, eventually, runCommand, type TestCluster } from '../helpers/cluster.ts';
import * as tasks from '../fixtures/tasks.ts';
import { Keeper } from '../fixtures/actors.ts';
import type { TaskEvent } from '../../runtime/protocol/tasks.ts';

const MiB = 1024 * 1024;
const cli = join(import.meta.dirname, '..', '..', 'runtime', 'cli', 'troupe.mjs');
/** A Float32Array of about `mib` MiB filled with v. */
const floats = (mib: number, v: number) => new Float32Array((mib * MiB) / 4).fill(v);

async function withCluster(
  o: Parameters<typeof startCluster>[0],
  fn: (c: TestCluster) => Promise<void>,
): Promise<void> {
  const c = await startCluster(o);
  try {
    await init();
    await fn(c);
  } finally {
    await shutdown();
    await c.stop();
  }
}

function storeOf(nodeId: string): Promise<{ stats: StoreStats; objects: StoredObject[] }> {
  return currentCore().bus.request(subjects.nodeObjects(nodeId), {});
}

/** Collects garbage until `done` holds: FinalizationRegistry callbacks come after a collection, not at once. */
function collectUntil(what: string, done: () => boolean | Promise<boolean>): Promise<true> {
  return eventually(what, async () => {
    (globalThis as { gc?: () => void }).gc!();
    await new Promise((r) => setTimeout(r, 100));
    return (await done()) || undefined;
  });
}

/** One cluster with default stores for the tests that need nothing else: started by the first, stopped after the
 * file (they come last: a session of init() stays open on it meanwhile). */
let shared: TestCluster | undefined;
async function withSharedCluster(fn: (c: TestCluster) => Promise<void>): Promise<void> {
  if (!shared) {
    shared = await startCluster();
    await init();
  }
  await fn(shared);
}
test.serial.after.always(async () => {
  if (!shared) return;
  await shutdown();
  await shared.stop();
});

const inStore = (c: TestCluster, id: string) => existsSync(join(c.head.objectDir, id));

test.serial('a full store spills the least recently used objects to disk; get and tasks bring them back', (t) =>
  withCluster({ head: { objectStoreMemory: 3.5 * MiB } }, async (c) => {
    const refs = Array.from({ length: 6 }, (_, i) => put(floats(1, i + 1)));
    await Promise.all(refs.map((r) => wait([r])));
    await eventually('objects spilled', async () => (await storeOf(c.head.nodeId)).stats.spilledObjects >= 3);
    const { stats } = await storeOf(c.head.nodeId);
    t.true(stats.used <= 3.5 * MiB, `${stats.used} bytes in memory`);
    t.is(stats.objects, 6);
    await eventually(
      'spilled files gone from shared memory',
      async () => refs.filter((r) => !inStore(c, r.id)).length >= 3,
    );
    // Read back in the driver and in a worker: spilled objects come back transparently.
    for (const [i, r] of refs.entries()) {
      const v = await get(r);
      t.is(v.length, MiB / 4);
      t.is(v[v.length - 1], i + 1);
    }
    t.is(await tasks.sumArray.remote(refs[1]), (2 * MiB) / 4);
    t.true((await storeOf(c.head.nodeId)).stats.used <= 3.5 * MiB);
    const mem = await runCommand(process.execPath, [cli, 'memory'], { env: { TROUPE_HOME: c.home, TROUPE_TOKEN: '' } });
    t.is(mem.code, 0, mem.stderr);
    t.regex(mem.stdout, new RegExp(`${c.head.nodeId} .*/ 3\\.5 MiB`));
    t.regex(mem.stdout, /All nodes: .* spilled, \d+ objects owned by/);
    const list = await runCommand(process.execPath, [cli, 'list', 'objects', '--json'], {
      env: { TROUPE_HOME: c.home, TROUPE_TOKEN: '' },
    });
    const rows = JSON.parse(list.stdout) as Array<{ id: string; spilled: string; refs: number }>;
    t.true(
      rows.some((r) => r.spilled === c.head.nodeId),
      'list objects marks spilled objects',
    );
    t.true(rows.filter((r) => refs.some((x) => x.id === r.id)).every((r) => r.refs >= 1));
  }),
);

test.serial(
  'with spilling off, referenced objects are never dropped: a put that does not fit fails with ObjectStoreFullError, ' +
    'the daemon stays up',
  (t) =>
    withCluster({ head: { objectStoreMemory: 3 * MiB, spillDir: false } }, async (c) => {
      t.throws(() => put(floats(4, 1)), { instanceOf: ObjectStoreFullError, message: /holds 3\.0 MiB/ });
      let first: ObjectRef<Float32Array> | undefined = put(floats(1.2, 1));
      const firstId = first.id;
      const second = put(floats(1.2, 2));
      await wait([first, second], { numReturns: 2 });
      const third = put(floats(1.2, 3));
      const e = await t.throwsAsync(get(third), { instanceOf: ObjectStoreFullError });
      t.regex(e!.message, /spilling is off/);
      t.is((await get(first))[0], 1, 'the objects already there are intact');
      t.true((await c.status()).nodes.every((n) => n.alive));
      first = undefined;
      await collectUntil('the first object freed', () => !inStore(c, firstId));
      const fourth = put(floats(1.2, 4));
      t.is((await get(fourth))[0], 4);
      t.is((await get(second))[0], 2);
    }),
);

test.serial(
  "cross-node: a node fetches another node's object in checked chunks and keeps the copy; copies survive the holder; " +
    'a lost object names what made it',
  (t) =>
    withCluster({ nodes: [{ numCpus: 1, resources: { b: 1 } }], nodeTimeoutMs: 1500 }, async (c) => {
      const [headNode, nodeB] = c.nodeIds;
      const onB = tasks.bigOn.options({ resources: { b: 1 } });
      const copied = onB.remote(600_000, 2); // 2.4 MB: several chunks
      const v = await get(copied);
      t.is(v.node, nodeB);
      t.is(v.data.length, 600_000);
      t.true(v.data.every((x) => x === 2));
      t.deepEqual(await get(copied), v, 'a second get reads the copy our node kept');
      const copy = (await storeOf(headNode)).objects.find((o) => o.id === copied.id);
      const loc = currentCore().objects.owned.get(copied.id)?.location as { size: number; copies?: string[] };
      t.like(copy, { primary: false, size: loc.size });
      t.deepEqual(loc.copies, [headNode], 'the owner knows of the copy');

      const notCopied = onB.remote(300_000, 3);
      await wait([notCopied]);
      process.kill(c.nodes[0].pids[0], 'SIGKILL');
      await eventually('node B declared dead', async () =>
        (await c.status()).nodes.some((n) => n.nodeId === nodeB && !n.alive),
      );
      const e = await t.throwsAsync(get(notCopied), { instanceOf: ObjectLostError });
      t.regex(e!.message, new RegExp(`object ${notCopied.id} \\(made by task bigOn\\) is lost: node ${nodeB}`));
      // The copy on the head node is now the object: a task there reads it.
      const echoed = (await tasks.echo.remote(copied)) as { data: Float32Array };
      t.is(echoed.data.length, 600_000);
    }),
);

test.serial(
  'lineage: a lost task result is made again by running its task again, inputs first; without retries or inputs it ' +
    'stays lost, saying why',
  (t) =>
    withCluster({ nodes: [{ numCpus: 4 }], nodeTimeoutMs: 1500 }, async (c) => {
      const [headNode, nodeB] = c.nodeIds;
      const onB = { schedulingStrategy: { nodeId: nodeB, soft: true } }; // where they fit now, else anywhere
      const whereIs = (ref: ObjectRef) =>
        currentCore().objects.owned.get(ref.id)?.location as { node?: string; copies?: string[] };
      const first = tasks.bigOn.options(onB).remote(300_000, 2);
      const second = tasks.scaledOn.options(onB).remote(first, 3); // made from first: both only on B
      const once = tasks.bigOn.options({ ...onB, maxRetries: 0 }).remote(300_000, 5);
      const fromOnce = tasks.scaledOn.options(onB).remote(once, 2);
      await wait([second, fromOnce], { numReturns: 2 }); // no get: that would copy them to the driver's node
      for (const ref of [first, second, once, fromOnce]) t.like(whereIs(ref), { node: nodeB, copies: undefined });
      process.kill(c.nodes[0].pids[0], 'SIGKILL');
      await eventually('node B declared dead', async () =>
        (await c.status()).nodes.some((n) => n.nodeId === nodeB && !n.alive),
      );

      const again = await get(second);
      t.is(again.node, headNode, 'made again on the node left');
      t.is(again.data.length, 300_000);
      t.true(again.data.every((x) => x === 6));
      t.is((await get(first)).node, headNode, 'its input was lost too, and made again first');

      const lost = await t.throwsAsync(get(once), { instanceOf: ObjectLostError });
      t.regex(lost!.message, new RegExp(`object ${once.id} \\(made by task bigOn\\) is lost: node ${nodeB}`));
      const noInput = await t.throwsAsync(get(fromOnce), { instanceOf: ObjectLostError });
      t.regex(
        noInput!.message,
        new RegExp(
          `object ${fromOnce.id} \\(made by task scaledOn\\) is lost: .*; running its task again failed: an input it ` +
            `needs is gone: object ${once.id} .* is lost`,
        ),
      );
    }),
);

test.serial(
  'transfers check every chunk: a damaged chunk is asked for again; one damaged every time fails with ObjectLostError',
  (t) =>
    withSharedCluster(async () => {
      const bus = currentCore().bus;
      const data = new Uint8Array(Math.floor(chunkSize(bus) * 2.5)).map((_, i) => i % 251);
      const asked = new Map<number, number>();
      // A subject a driver may serve and ask (its credential allows no other): a stand-in for a node's chunk reads.
      const flaky = subjects.obj.procRead('flaky-test');
      bus.serve(flaky, (req: ChunkRequest) => {
        const n = (asked.get(req.offset) ?? 0) + 1;
        asked.set(req.offset, n);
        const chunk = makeChunk(data.slice(req.offset, req.offset + req.length), data.length);
        if (n === 1) chunk.data[0] ^= 0xff; // corrupt on the way
        if (n === 2 && req.offset === 0) chunk.data = chunk.data.subarray(1); // then truncated
        return chunk;
      });
      t.deepEqual(await fetchToMemory(bus, [flaky], 'flaky', data.length), data);
      t.is(asked.size, 3);
      t.is(asked.get(0), 3);
      const bad = subjects.obj.procRead('bad-test');
      bus.serve(bad, (req: ChunkRequest) => ({
        ...makeChunk(data.slice(req.offset, req.offset + req.length), data.length),
        crc: 1,
      }));
      await t.throwsAsync(fetchToMemory(bus, [bad], 'bad', data.length), {
        instanceOf: ObjectLostError,
        message: /failed its checksum 3 times/,
      });
    }),
);

test.serial(
  'tensors of every dtype round-trip through the store and through a task; repeated gets reuse the decoded tensor',
  (t) =>
    withSharedCluster(async () => {
      const n = 40_000; // over the inline threshold for every dtype
      const made: Array<[tf.DataType, tf.Tensor]> = [
        ['float32', tf.linspace(-1, 1, n)],
        ['int32', tf.range(0, n, 1, 'int32')],
        [
          'bool',
          tf.tensor1d(
            Array.from({ length: 4 * n }, (_, i) => i % 3 === 0),
            'bool',
          ),
        ],
        ['complex64', tf.complex(tf.ones([n / 2]), tf.fill([n / 2], 2))],
        [
          'string',
          tf.tensor1d(
            Array.from({ length: n / 4 }, (_, i) => `s${i}`),
            'string',
          ),
        ],
      ];
      for (const [dtype, x] of made) {
        const ref = put(x);
        const back = await get(ref);
        t.is(back.dtype, dtype);
        t.deepEqual(back.shape, x.shape);
        t.deepEqual(await back.data(), await x.data(), dtype);
        if (dtype !== 'string' && dtype !== 'complex64') {
          const onWorker = await tasks.tensorSum.remote(ref);
          t.is(onWorker.dtype, dtype);
          t.is(
            onWorker.sum,
            Array.from(x.dataSync()).reduce((a: number, b) => a + Number(b), 0),
            'the worker sees the same values',
          );
        }
      }
      const w = put(tf.ones([300, 300]));
      const a = await get(w);
      t.is(await get(w), a, 'the same decoded tensor');
      a.dispose();
      const b = await get(w);
      t.not(b, a);
      t.false(b.isDisposed);
    }),
);

test.serial(
  'reference counting: nested refs live as long as their container; a ref held by an actor lives until the actor ' +
    'dies; refs returned from tasks stay valid',
  (t) =>
    withSharedCluster(async (c) => {
      // Nested: the container holds the inner object after our own ref to it is gone.
      let outer: ObjectRef<{ inner: ObjectRef<Float32Array> }> | undefined;
      const innerId = (() => {
        const inner = put(floats(1, 5));
        outer = put({ inner });
        return inner.id;
      })();
      await wait([outer!]);
      await eventually('inner stored', async () => inStore(c, innerId));
      for (let i = 0; i < 5; i++) {
        (globalThis as { gc?: () => void }).gc!();
        await new Promise((r) => setTimeout(r, 100));
      }
      t.true(inStore(c, innerId), 'held by its container');
      t.is((await get((await get(outer!)).inner))[0], 5);
      outer = undefined;
      await collectUntil(
        'the inner object freed with its container',
        () => !inStore(c, innerId) && !currentCore().objects.owned.get(innerId),
      );

      // Borrowed by an actor: kept while the actor holds it, freed when the actor dies.
      const keeper = Keeper.remote();
      const keptId = await (async () => {
        const r = put(floats(1, 6));
        t.is(await keeper.keep([r]), 1);
        return r.id;
      })();
      for (let i = 0; i < 5; i++) {
        (globalThis as { gc?: () => void }).gc!();
        await new Promise((r) => setTimeout(r, 100));
      }
      t.true(inStore(c, keptId), 'borrowed by the actor');
      t.is(currentCore().objects.owned.get(keptId)?.borrowers?.size, 1);
      t.is(await keeper.sizeOfFirst(), MiB / 4);
      await kill(keeper);
      await collectUntil('the object freed after its borrower died', () => !inStore(c, keptId));

      // A ref made inside a task and returned: owned by the worker, still valid after the worker dropped its own.
      const box = await tasks.putInside.remote(4);
      await tasks.sleep.remote(2500); // the worker collects its garbage after work
      t.is(await box.ref, 40);
    }),
);

test.serial(
  "a ref nested in a call's arguments: its owner knows the callee borrows it by the time the call answers (the " +
    'caller then lets go of it), also when the ref is passed on by a borrower',
  (t) =>
    withSharedCluster(async () => {
      const borrowers = (r: ObjectRef<unknown>) => currentCore().objects.owned.get(r.id)?.borrowers?.size ?? 0;
      const [a, b] = [Keeper.remote(), Keeper.remote()];
      const fromOwner: number[] = [];
      const passedOn: number[] = [];
      for (let i = 0; i < 20; i++) {
        const r = put(floats(0.25, i));
        await a.keep([r]); // the answer came on a lane, and a's borrow on the same lane ahead of it
        fromOwner.push(borrowers(r));
        await a.handOn(b); // b told us over NATS, and answered a once we said we had it
        passedOn.push(borrowers(r));
      }
      t.deepEqual(fromOwner, Array(20).fill(1));
      t.deepEqual(passedOn, Array(20).fill(2));
      await Promise.all([a, b].map((k) => kill(k)));
    }),
);

test.serial("a task's large result belongs to the caller: it outlives the worker that made it", (t) =>
  withSharedCluster(async (c) => {
    const r = tasks.fill.remote(300_000, 9);
    await wait([r]);
    const bus = currentCore().bus;
    const ev = await eventually('the task event', async () =>
      (await bus.request<TaskEvent[]>(subjects.headTasks, {})).find((e) => e.taskId === r.id && e.state === 'FINISHED'),
    );
    process.kill(ev.pid, 'SIGKILL');
    await eventually('the worker gone', async () => {
      try {
        process.kill(ev.pid, 0);
        return false;
      } catch {
        return true;
      }
    });
    await new Promise((res) => setTimeout(res, 500)); // time for its node to free what the worker owned
    const v = await get(r);
    t.is(v.length, 300_000);
    t.is(v[0], 9);
    t.true(inStore(c, r.id));
  }),
);

test.serial("calls batched in one turn are split under the server's max_payload, both ways", (t) =>
  withSharedCluster(async () => {
    const keeper = Keeper.remote();
    // 1.35 MB in all, each sent inline
    const blobs = Array.from({ length: 15 }, (_, i) => new Uint8Array(90_000).fill(i));
    const back = (await get(blobs.map((b) => keeper.echo(b)))) as Uint8Array[];
    t.is(back.length, 15);
    back.forEach((b, i) => {
      t.is(b.length, 90_000);
      t.is(b[89_999], i);
    });
  }),
);

// Last: it leaves the shared cluster joined by address.
test.serial(
  "a driver that joins by address on a machine running a node of that cluster puts into that node's store",
  (t) =>
    withSharedCluster(async (c) => {
      await shutdown();
      // As with TROUPE_ADDRESS on the head machine: no token passed, the saved cluster's is used.
      await init({ address: c.address });
      const ref = put(floats(1, 3));
      await wait([ref]);
      t.true(inStore(c, ref.id), "in the node's shared-memory store, not in the driver's memory");
      t.like(currentCore().objects.owned.get(ref.id)?.location, { node: c.nodeIds[0] });
      t.is((await get(ref))[0], 3);
    }),
);
