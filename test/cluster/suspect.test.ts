// The SUSPECT phase: a node that stops heartbeating (its daemon stopped with SIGSTOP) is SUSPECT before it could be
// declared dead. Work that only it can run waits at the head, a new actor that prefers it goes elsewhere, nothing is
// restarted; once it beats again it is ALIVE and the waiting work runs on it.
import test from 'ava';
import { useCluster, eventually } from '../helpers/cluster.ts';
import { get } from '../../runtime/index.ts';
import { env } from '../fixtures/tasks.ts';
import { Phoenix } from '../fixtures/actors.ts';

// Long enough that the stopped node is never declared dead here; suspect after the default 1.5 s.
const cluster = useCluster(test, {
  head: { numCpus: 2 },
  nodes: [{ numCpus: 1, resources: { b: 1 } }],
  nodeTimeoutMs: 60_000,
});

test('a silent node is SUSPECT: no new work goes to it, nothing restarts, a heartbeat makes it ALIVE', async (t) => {
  const c = cluster();
  const [a, b] = c.nodeIds;
  const stateOf = async (node: string) => (await c.status()).nodes.find((n) => n.nodeId === node)?.state;
  const daemon = c.nodes[0].pids[0];
  const staying = Phoenix.options({ schedulingStrategy: { nodeId: b, soft: false } }).remote();
  const before = await staying.bump();
  t.is(before.node, b);

  process.kill(daemon, 'SIGSTOP');
  try {
    await eventually('B to be SUSPECT', async () => (await stateOf(b)) === 'SUSPECT');
    const human = await c.status();
    t.true(human.nodes.find((n) => n.nodeId === b)!.alive, 'a suspect node is not dead');
    // Only B has 'b': the task waits at the head (it is not infeasible, and not sent to B).
    const onB = env.options({ resources: { b: 1 } }).remote();
    await eventually('the demand for b pending at the head', async () =>
      (await c.status()).pending.some((p) => p.demand.b === 1),
    );
    // An actor that would rather be on B starts on A.
    const elsewhere = await Phoenix.options({ schedulingStrategy: { nodeId: b, soft: true } })
      .remote()
      .bump();
    t.is(elsewhere.node, a);
    t.is(await stateOf(b), 'SUSPECT');

    process.kill(daemon, 'SIGCONT');
    await eventually('B ALIVE again', async () => (await stateOf(b)) === 'ALIVE');
    t.is((await get(onB)).node, b);
  } finally {
    process.kill(daemon, 'SIGCONT');
  }
  // Nothing was restarted: the actor on B is the same process, with its state.
  const after = await staying.bump();
  t.is(after.pid, before.pid);
  t.is(after.calls, 2);
});
