// A node dies: its actors are restarted on another node, keeping their id and handles.
import test from 'ava';
import { useCluster, eventually, isAlive } from '../helpers/cluster.ts';
import { currentCore } from '../../runtime/core/core.ts';
import { Phoenix } from '../fixtures/actors.ts';

const cluster = useCluster(test, { head: { numCpus: 2 }, nodes: [{ numCpus: 2 }], nodeTimeoutMs: 1000 });

test('an actor whose node dies comes back on another node, same handle, same id', async (t) => {
  const c = cluster();
  const [survivor, doomed] = c.nodeIds;
  const p = Phoenix.options({ schedulingStrategy: { nodeId: doomed, soft: true } }).remote();
  const before = await p.bump();
  t.is(before.node, doomed);
  process.kill(c.nodes[0].pids[0], 'SIGKILL'); // the node daemon; its workers follow it
  await eventually('the old actor process gone', async () => !isAlive(before.pid));
  // Until nats-server has seen the dead worker's connection close, a call may still be delivered to it, lost, and
  // (maxTaskRetries 0) fail with the node's death: a call made once the head knows waits for the restart.
  await eventually(
    'the node declared dead',
    async () => !(await c.status()).nodes.find((n) => n.nodeId === doomed)?.alive,
  );
  const after = await p.bump(); // waits through RESTARTING
  t.is(after.node, survivor);
  t.is(after.calls, 1);
  const info = await (await currentCore().gcs()).actors.get(p.actorId);
  t.is(info?.state, 'ALIVE');
  t.is(info?.restarts, 1);
  t.regex(info?.cause ?? '', new RegExp(`its node ${doomed} died`));
});
