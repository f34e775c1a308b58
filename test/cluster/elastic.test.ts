// Elastic training: a replica whose node dies cannot come back (no resources are left), so the run goes on with
// the others, the data sharded again among them.
import test from 'ava';
import { useCluster } from '../helpers/cluster.ts';
import { trainWithKill } from '../helpers/training.ts';

// One CPU on each node: each replica (1 CPU) has a node to itself, and nowhere to go when its node dies.
const cluster = useCluster(test, { head: { numCpus: 1 }, nodes: [{ numCpus: 1 }], nodeTimeoutMs: 2000 });

test.serial('when a dead replica cannot be placed again, training goes on with N-1', async (t) => {
  t.timeout(120_000);
  // The node daemon; its workers follow it. (trainWithKill fails the test if the run ends before the kill.)
  const r = await trainWithKill(() => process.kill(cluster().nodes[0].pids[0], 'SIGKILL'), { restartTimeoutMs: 3000 });
  t.is(r.failures, 1);
  t.is(r.history.length, 4);
  t.deepEqual(
    r.history.map((e) => e.replicas),
    [2, 1, 1, 1],
  );
  t.true(r.history[3].testAccuracy! > 0.95, `test accuracy ${r.history[3].testAccuracy}`);
});
