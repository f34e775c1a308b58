// troupe on a user's own NATS cluster (`troupe start --head --nats URL,URL,URL`): every process knows the three
// servers and fails over, the cluster state is kept in three copies (R3), and killing the server that carries the
// head's connection under load loses no call and no state. Calls here go through NATS (no lanes), as between machines.
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { init, shutdown, get, getActor, kill } from '../../runtime/index.ts';
import { defaults } from '../../runtime/base/config.ts';
import { Bus } from '../../runtime/bus/bus.ts';
import { subjects } from '../../runtime/protocol/subjects.ts';
import type { HeadStatus } from '../../runtime/protocol/cluster.ts';
import { startHead, startNode, type StartedCluster } from '../../runtime/cluster/local-cluster.ts';
import { eventually, tempDir } from '../helpers/cluster.ts';
import { startNatsCluster, type NatsCluster } from '../helpers/nats-cluster.ts';
import { Counter } from '../fixtures/actors.ts';
import { add } from '../fixtures/tasks.ts';

// Read when config.ts loads, before this line: set here before init(), and in the environment for the daemons.
defaults.lanes = false;
defaults.callProbeMs = 1000;
process.env.TROUPE_LANES = '0';
process.env.TROUPE_CALL_PROBE_MS = '1000';

let nats: NatsCluster | undefined;
/** Removed after the servers stop: one stopping writes into its JetStream dir, and would make the dir anew. */
let natsDir: string | undefined;
const started: StartedCluster[] = [];
test.after.always(async () => {
  await shutdown();
  for (const s of started.reverse()) await s.stop();
  await nats?.stop();
  if (natsDir) rmSync(natsDir, { recursive: true, force: true });
});

async function headStatus(address: string, token: string): Promise<HeadStatus> {
  const bus = await Bus.connect({ address, token, name: 'nats-cluster-test' });
  try {
    return await bus.request<HeadStatus>(subjects.headStatus, {});
  } finally {
    await bus.close();
  }
}

test.serial('three nats-servers: R3 state, and one killed under load loses no call and no state', async (t) => {
  const home = tempDir(t);
  process.env.TROUPE_HOME = home;
  natsDir = mkdtempSync(join(tmpdir(), 'troupe-test-nats-'));
  nats = await startNatsCluster(natsDir);
  const { address, token } = nats;
  const common = { detached: false, numGpus: 0, prestartWorkers: 0, objectStoreDir: home } as const;
  const head = await startHead({ ...common, nats: address, token, numCpus: 2 });
  started.push(head);
  started.push(await startNode({ ...common, address, token, numCpus: 2, sessionDir: head.sessionDir }));
  await init({ address, token });

  const status = await headStatus(address, token);
  t.deepEqual(status.bus, { servers: 3, cluster: 'users-nats', stateReplicas: 3 });
  const bus = await Bus.connect({ address, token, name: 'nats-cluster-test-jsm' });
  const jsm = await jetstreamManager(bus.nc);
  for (const stream of ['KV_troupe-actors', 'KV_troupe-head-lease', 'OBJ_troupe-checkpoints'])
    t.is((await jsm.streams.info(stream)).config.num_replicas, 3, stream);
  await bus.close();

  const counter = Counter.options({ name: 'tally', lifetime: 'detached' }).remote(0);
  t.is(await counter.add(0), 0);
  // The worst server to lose: the one the head's connection is on.
  const victim = await nats.serverOf('troupe-head');
  t.truthy(victim, "the head's connection is on one of the servers");

  // Calls in waves of 20, bounded in count; the server dies while the sixth wave is on its way.
  const waves = 15;
  let sent = 0;
  const failures: unknown[] = [];
  for (let w = 0; w < waves; w++) {
    const wave = Promise.allSettled(Array.from({ length: 20 }, () => counter.add(1)));
    if (w === 5) await nats.kill(victim!);
    const results = await wave;
    sent += results.length;
    for (const r of results) if (r.status === 'rejected') failures.push(r.reason);
  }
  t.deepEqual(failures, [], 'no call failed');
  t.is(await counter.value(), sent, 'each call ran once');

  // The cluster goes on without the server: the head answers, its state is whole, new work is placed.
  const after = await eventually('the head to answer on the two servers left', () => headStatus(address, token));
  t.is(after.lease?.term, status.lease?.term, 'the same head leads');
  t.is(after.nodes.filter((n) => n.alive).length, 2);
  const found = await getActor<Counter>('tally');
  t.is(await found.value(), sent, 'the named actor is found (KV) with its state');
  t.is(await get(add.remote(2, 3)), 5);
  const fresh = Counter.remote(7);
  t.is(await fresh.add(1), 8);
  await kill(found);
});
