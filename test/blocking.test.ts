// A task that waits for a task it submitted must not deadlock, even on a one-CPU cluster:
// while it waits in get(), its CPU is lent to the node (as Ray does).
import test from 'ava';
import { init, shutdown, get } from '../runtime/index.ts';
import { startCluster, type TestCluster } from './helpers/cluster.ts';
import { nested, deepNested, add } from './fixtures/tasks.ts';

let c: TestCluster;
test.before(async () => {
  c = await startCluster({ head: { numCpus: 1 } });
  await init();
});
test.after.always(async () => {
  await shutdown();
  await c?.stop();
});

test.serial('nested tasks on one CPU finish', async (t) => {
  t.is(await nested.remote(1), 2);
  t.is(await deepNested.remote(1), 12);
  t.deepEqual(await get([nested.remote(5), nested.remote(6)]), [6, 7]);
  // The CPU lent out while blocked comes back: afterwards the node is whole again.
  await get(add.remote(0, 0));
  const node = await new Promise<Record<string, number>>((resolve) => setTimeout(async () => resolve((await c.status()).nodes[0].available), 1500));
  t.is(node.CPU, 1);
});
