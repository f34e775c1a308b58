// The head keeps no state of its own: killed and started again, it rebuilds nodes and actors from KV and heartbeats.
import test from 'ava';
import { join } from 'node:path';
import { get } from '../runtime/index.ts';
import { startHead } from '../runtime/local-cluster.ts';
import { useCluster, eventually, runCommand } from './helpers/cluster.ts';
import { Phoenix } from './fixtures/actors.ts';
import { add, length } from './fixtures/tasks.ts';

const cluster = useCluster(test, { head: { numCpus: 2 }, nodes: [{ numCpus: 2 }] });

test.serial('killing the head loses nothing: calls keep working, a new head takes over from KV', async (t) => {
  const c = cluster();
  const actor = Phoenix.options({ maxRestarts: 1 }).remote();
  const first = await actor.bump();
  t.is(await add.remote(1, 2), 3);

  const [, headPid] = c.head.pids; // [nats-server, head, node daemon]
  process.kill(headPid, 'SIGKILL');
  // The head is not on the call path: the actor answers while there is no head at all.
  t.is((await actor.bump()).calls, 2);

  const again = await startHead({ detached: false, nats: c.address, token: c.token, numCpus: 1, objectStoreDir: c.home });
  t.teardown(() => again.stop());
  const status = await eventually('3 alive nodes under the new head', async () => { const s = await c.status(); return s.nodes.filter((n) => n.alive).length === 3 && s; });
  t.true(status.nodes.some((n) => n.nodeId === c.nodeIds[1] && n.alive)); // known from KV, kept alive by its heartbeats
  t.is(await add.remote(2, 3), 5); // leases from the new head
  t.is(await length.remote(new Float32Array(10)).then((r) => r.length), 10);

  // The new head knows the actor (from KV) and restarts it when it dies.
  process.kill(first.pid, 'SIGKILL');
  const after = await eventually('the actor restarted by the new head', () => get(actor.bump()).catch(() => undefined));
  t.not(after.pid, first.pid);
  t.is(after.calls, 1);

  // The CLI lists what ran, from the new head's task events and every process's owned objects.
  const cli = (...args: string[]) => runCommand(process.execPath, [join(import.meta.dirname, '..', 'runtime', 'cli', 'troupe.mjs'), ...args], { env: { TROUPE_HOME: c.home } });
  const tasks = JSON.parse((await cli('list', 'tasks', '--json')).stdout) as Array<{ name: string; state: string }>;
  t.true(tasks.some((x) => x.name === 'add' && x.state === 'FINISHED'));
  const objects = JSON.parse((await cli('list', 'objects', '--json')).stdout) as Array<{ createdBy: string; state: string }>;
  t.true(objects.some((o) => o.createdBy === 'task add' && o.state === 'READY'));
});
