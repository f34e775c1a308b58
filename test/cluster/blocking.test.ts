// A task that waits for a task it submitted must not deadlock, even on a one-CPU cluster:
// while it waits in get(), its CPU is lent to the node (as Ray does).
import test from 'ava';
import { get } from '../../runtime/index.ts';
import { useCluster } from '../helpers/cluster.ts';
import { nested, deepNested, add } from '../fixtures/tasks.ts';

const cluster = useCluster(test, { head: { numCpus: 1 } });

test.serial('nested tasks on one CPU finish', async (t) => {
  t.is(await nested.remote(1), 2);
  t.is(await deepNested.remote(1), 12);
  t.deepEqual(await get([nested.remote(5), nested.remote(6)]), [6, 7]);
  // The CPU lent out while blocked comes back: afterwards the node is whole again.
  await get(add.remote(0, 0));
  const node = await new Promise<Record<string, number>>((resolve) =>
    setTimeout(async () => resolve((await cluster().status()).nodes[0].available), 1500),
  );
  t.is(node.CPU, 1);
});
