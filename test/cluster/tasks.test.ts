// Tasks end to end on a real cluster: values, refs, nested refs, errors, wait, bad input at the call site.
import test from 'ava';
import { readdirSync } from 'node:fs';
import {
  put,
  get,
  wait,
  remote,
  ObjectRef,
  TaskError,
  SerializationError,
  GetTimeoutError,
  UsageError,
  ProtocolError,
} from '../../runtime/index.ts';
import { join } from 'node:path';
import { useCluster, eventually, tempDir, runCommand } from '../helpers/cluster.ts';
import * as tasks from '../fixtures/tasks.ts';
import { currentCore } from '../../runtime/core/core.ts';

const cluster = useCluster(test, { head: { numCpus: 2 } });

test.serial('a task returns its value; await ref and get() agree', async (t) => {
  const ref = tasks.add.remote(2, 3);
  t.true(ref instanceof ObjectRef);
  t.is(await ref, 5);
  t.is(await get(ref), 5);
  t.deepEqual(await get([tasks.add.remote(1, 1), tasks.add.remote(2, 2)]), [2, 4]);
});

test.serial('an ObjectRef has catch and finally, as a Promise has', async (t) => {
  let settled = 0;
  const caught = await tasks.fail
    .remote('boom')
    .catch((e: Error) => e)
    .finally(() => settled++);
  t.true(caught instanceof TaskError);
  t.regex((caught as Error).message, /boom/);
  t.is(await tasks.add.remote(1, 2).finally(() => settled++), 3);
  t.is(await tasks.add.remote(1, 2).catch(() => -1), 3);
  t.is(settled, 2);
});

test.serial(
  'objects whose refs are all gone are freed, node-store files too, also after a task used them',
  async (t) => {
    const owned = currentCore().objects.owned;
    const store = cluster().head.objectDir;
    // Refs made and dropped inside a function: only their ids survive it.
    const useAndDrop = async () => {
      const small = await Promise.all(Array.from({ length: 50 }, (_, i) => tasks.add.remote(i, 1)));
      const big = tasks.fill.remote(300_000, 2); // 1.2 MB: a file in the node's store
      await big;
      const kept = put(41);
      t.is(await tasks.add.remote(kept, 1), 42); // held for the task while it ran, then ours again
      return { small: small.length, bigId: big.id, keptId: kept.id };
    };
    const { bigId, keptId } = await useAndDrop();
    t.true(readdirSync(store).includes(bigId));
    await eventually('the big object freed', async () => {
      (globalThis as { gc?: () => void }).gc!();
      await new Promise((r) => setTimeout(r, 150));
      return !owned.get(bigId) && !readdirSync(store).includes(bigId) && !owned.get(keptId);
    });
  },
);

test.serial(
  'quick tasks are queued deep on a worker, but a function not known to be quick waits for an idle one',
  async (t) => {
    await get(Array.from({ length: 50 }, (_, i) => tasks.add.remote(i, 1))); // add is now known to be quick
    // Submitted behind hundreds of quick ones: had they been queued on a busy worker like those, the first would wait
    // there for the second, queued behind it on the same worker, and never meet it.
    const dir = tempDir(t);
    const quick = Array.from({ length: 400 }, (_, i) => tasks.add.remote(i, 1));
    const slow = [tasks.meet.remote(dir, 2), tasks.meet.remote(dir, 2)];
    const more = Array.from({ length: 400 }, (_, i) => tasks.add.remote(i, 2));
    const met = await get(slow);
    t.not(met[0].pid, met[1].pid);
    t.deepEqual(
      await get(quick),
      quick.map((_, i) => i + 1),
    );
    t.deepEqual(
      await get(more),
      more.map((_, i) => i + 2),
    );
  },
);

test.serial('worker processes are pooled and reused, not started per task', async (t) => {
  const pids = new Set<number>();
  for (let i = 0; i < 20; i++) pids.add((await tasks.env.remote()).pid);
  t.true(pids.size <= 2, `20 sequential tasks used ${pids.size} worker processes`);
});

test.serial('structured values and typed arrays round-trip through a task', async (t) => {
  const value = {
    s: 'x',
    n: [1, 2.5, -3],
    m: new Map([['k', 1]]),
    d: new Date(5),
    f: new Float32Array([1.5, -2.25]),
    big: 2n ** 70n,
  };
  t.deepEqual(await tasks.echo.remote(value), value);
});

test.serial(
  'plain arguments and results (sent inside the message, not encoded on their own) arrive exactly as encoded ones do',
  async (t) => {
    const plain = [1, 2.5, NaN, -Infinity, 'a', '', true, null, undefined];
    const got = await tasks.argsOf.remote(...plain);
    t.is(got.length, plain.length);
    plain.forEach((v, i) => t.true(Object.is(got[i], v), `argument ${i}`));
    const many = Array.from({ length: 17 }, (_, i) => i); // too many to go plain: encoded
    t.deepEqual(await tasks.argsOf.remote(...many), many);
    const long = 'x'.repeat(1000);
    t.deepEqual(await tasks.argsOf.remote(long, 2), [long, 2]);
    // A plain result comes back as itself too, inside the answer.
    const sum = tasks.add.remote(40, 2);
    t.is(await sum, 42);
    t.deepEqual(currentCore().objects.owned.get(sum.id)?.location, { value: 42 });
    t.is(await tasks.echo.remote(undefined), undefined);
    // A receiver takes an array of values only when it is one a caller would have sent so.
    await t.throwsAsync(currentCore().objects.resolveArgs([{ not: 'plain' }], undefined), {
      instanceOf: ProtocolError,
      message: /plain values/,
    });
  },
);

test.serial('refs as arguments are resolved on the worker, small and large', async (t) => {
  t.is(await tasks.add.remote(put(40), 2), 42);
  // 4 MB: above the inline threshold, so it goes into the node's store and the worker reads it there.
  const big = put(new Float32Array(1_000_000).fill(0.5));
  await big;
  t.true(readdirSync(cluster().head.objectDir).includes(big.id));
  t.deepEqual(await tasks.length.remote(big), { length: 1_000_000, first: 0.5, last: 0.5, type: 'Float32Array' });
  const made = tasks.fill.remote(300_000, 7); // a large task result stays in the store; the next task reads it there
  t.deepEqual(await tasks.length.remote(made), { length: 300_000, first: 7, last: 7, type: 'Float32Array' });
  t.is((await get(made)).length, 300_000);
});

test.serial('large arguments passed by value go through the object store', async (t) => {
  // 4 MB: far above NATS's 1 MB max_payload; it travels as a ref, the task sees a Float32Array.
  t.deepEqual(await tasks.length.remote(new Float32Array(1_000_000).fill(3)), {
    length: 1_000_000,
    first: 3,
    last: 3,
    type: 'Float32Array',
  });
});

test.serial('a remote function can be called as soon as a dynamic import of its module settles', async (t) => {
  const { triple } = await import('../fixtures/late-tasks.ts');
  t.is(await triple.remote(7), 21);
});

test.serial('wait() and get() with timeouts leave no waiter behind on a pending object', async (t) => {
  const slow = tasks.sleep.remote(1500);
  for (let i = 0; i < 200; i++) await wait([slow], { timeoutMs: 0 });
  for (let i = 0; i < 50; i++) await t.throwsAsync(get(slow, { timeoutMs: 1 }), { instanceOf: GetTimeoutError });
  t.is(currentCore().objects.owned.get(slow.id)!.waiters?.size ?? 0, 0);
  t.is(await slow, 1500);
});

test.serial('chained and nested refs', async (t) => {
  t.is(await tasks.add.remote(tasks.add.remote(1, 2), tasks.add.remote(3, 4)), 10);
  const refs = [1, 2, 3, 4].map((n) => put(n));
  t.is(await tasks.sumRefs.remote(refs), 10); // refs inside a list stay refs; the task gets them
  const inner = await tasks.putInside.remote(4); // a ref owned by a worker, read by the driver
  t.true(inner.ref instanceof ObjectRef);
  t.is(await inner.ref, 40);
  t.is(await tasks.nested.remote(1), 2); // a task that submits a task
});

test.serial('an exception in a task is a TaskError with the original name, message and remote stack', async (t) => {
  const err = await t.throwsAsync(get(tasks.fail.remote('bad input 7')), { instanceOf: TaskError });
  t.is(err!.message, 'bad input 7');
  t.is(err!.remoteName, 'RangeError');
  t.regex(err!.remoteStack, /fixtures\/tasks\.ts/);
  t.is(err!.where, 'task fail');
  t.true(err!.cause instanceof RangeError);
  // A failed input fails the dependent task with the same error.
  const downstream = await t.throwsAsync(get(tasks.add.remote(tasks.fail.remote('upstream'), 1)), {
    instanceOf: TaskError,
  });
  t.is(downstream!.message, 'upstream');
  // The worker survives: the next task runs.
  t.is(await tasks.add.remote(1, 1), 2);
});

test.serial('wait() splits ready from pending, in order, with numReturns and timeoutMs', async (t) => {
  const fast = tasks.sleep.remote(0);
  const slow = tasks.sleep.remote(3000);
  const [ready, pending] = await wait([slow, fast], { numReturns: 1 });
  t.deepEqual(ready, [fast]);
  t.deepEqual(pending, [slow]);
  const [r2, p2] = await wait([fast, slow], { numReturns: 2, timeoutMs: 100 });
  t.deepEqual([r2, p2], [[fast], [slow]]);
  await t.throwsAsync(get(slow, { timeoutMs: 50 }), { instanceOf: GetTimeoutError });
  t.is(await slow, 3000);
  const [all] = await wait([fast, slow], { numReturns: 2 });
  t.is(all.length, 2);
  const failed = tasks.fail.remote('x');
  const [readyFailed] = await wait([failed]);
  t.deepEqual(readyFailed, [failed]); // a failed object is ready; get() throws
  await t.throwsAsync(wait([fast], { numReturns: 2 }), { instanceOf: UsageError });
});

test.serial('bad input fails at the call site with a clear error', async (t) => {
  const fnErr = t.throws(() => tasks.echo.remote(() => 1), { instanceOf: SerializationError });
  t.regex(fnErr!.message, /function/);
  t.throws(() => put({ p: Promise.resolve(1) }), { instanceOf: SerializationError, message: /Promise/ });
  t.throws(() => tasks.echo.remote(Symbol('x')), { instanceOf: SerializationError, message: /Symbol/ });
  class Point {
    constructor(readonly x: number) {}
  }
  t.throws(() => tasks.echo.remote(new Point(1)), { instanceOf: SerializationError, message: /instance of Point/ });
  // A task that returns one fails with it too, rather than handing back a plain object.
  await t.throwsAsync(tasks.newPoint.remote(), { instanceOf: TaskError, message: /instance of Point/ });
  t.throws(() => tasks.add.options({ numCpus: -1 }), { instanceOf: UsageError, message: /numCpus/ });
  t.throws(() => tasks.add.options({ numGpus: 1.5 }), { instanceOf: UsageError, message: /numGpus/ });
  t.throws(() => tasks.add.options({ numCPUs: 1 } as never), {
    instanceOf: UsageError,
    message: /unknown remote option 'numCPUs'/,
  });
  t.throws(() => tasks.add.options({ schedulingStrategy: 'PACKED' } as never), {
    instanceOf: UsageError,
    message: /schedulingStrategy/,
  });
  const local = remote((x: number) => x); // defined here, not exported by a module workers can import
  await new Promise((r) => setTimeout(r, 50));
  t.throws(() => local.remote(1), { instanceOf: UsageError, message: /not an export/ });
  await t.throwsAsync(get('nope' as never), { instanceOf: UsageError });
});

test.serial('user code on a worker cannot read the cluster token', async (t) => {
  t.is(await tasks.tokenVisible.remote(), null);
});

test.serial("the CLI shows a task error's terminal escapes as text, not as escapes", async (t) => {
  // OSC 52 would write the clipboard of whoever runs `troupe list tasks`; ESC[2J would clear their screen.
  await t.throwsAsync(tasks.fail.remote('boom\x1b]52;c;ZXZpbA==\x07\x1b[2J'), { instanceOf: TaskError });
  const cli = join(import.meta.dirname, '..', '..', 'runtime', 'cli', 'troupe.mjs');
  const listed = await eventually('the failed task in troupe list tasks', async () => {
    const r = await runCommand(process.execPath, [cli, 'list', 'tasks'], { env: { TROUPE_HOME: cluster().home } });
    return r.stdout.includes('boom') ? r : undefined;
  });
  t.is(listed.code, 0, listed.stderr);
  t.false(listed.stdout.includes('\x1b'), listed.stdout);
  t.regex(listed.stdout, /boom\\u\{1b\}\]52;c;ZXZpbA==\\u\{7\}\\u\{1b\}\[2J/);
});
