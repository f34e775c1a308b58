// The head raises the cluster state's streams to three copies once three servers are up (raiseReplicas in
// runtime/state/buckets.ts). Each copy of a bounded store reserves its bound on its server's disk: on small disks the
// stores are raised with a lower bound rather than left in one copy, but never below what they hold. Real
// nats-servers, clustered on loopback, each with 1 GiB for JetStream.
import test from 'ava';
import { jetstreamManager } from '@nats-io/jetstream';
import { Bus } from '../../runtime/bus/bus.ts';
import { raiseReplicas } from '../../runtime/state/buckets.ts';
import { startNatsCluster } from '../helpers/nats-cluster.ts';
import { eventually, tempDir } from '../helpers/cluster.ts';

const MiB = 1024 ** 2;

test('stores too large for three copies are raised with lower bounds, not below what they hold', async (t) => {
  t.timeout(60_000);
  const nats = await startNatsCluster(tempDir(t), 3, { maxFileStore: '1G' });
  t.teardown(() => nats.stop());
  const bus = await Bus.connect({ address: nats.address, token: nats.token, name: 'replicas-test' });
  t.teardown(() => bus.close());
  const jsm = await jetstreamManager(bus.nc);
  const store = (name: string, maxBytes: number) =>
    jsm.streams.add({ name, subjects: [`$O.${name}.>`], num_replicas: 1, max_bytes: maxBytes });
  const config = async (name: string) => (await jsm.streams.info(name)).config;

  // In one copy each, as a head makes them while two of three servers are up: two stores of 700 MiB fit (on two
  // servers); three copies of both do not.
  await jsm.streams.add({ name: 'KV_troupe-t', subjects: ['$KV.troupe-t.>'], num_replicas: 1 });
  for (const s of ['OBJ_troupe-a', 'OBJ_troupe-b']) await store(s, 700 * MiB);
  const raised = await raiseReplicas(bus);
  t.is(raised.fewest, 3, JSON.stringify(raised));
  t.deepEqual(raised.refused, []);
  t.is((await config('KV_troupe-t')).num_replicas, 3);
  const bounds: number[] = [];
  for (const s of ['OBJ_troupe-a', 'OBJ_troupe-b']) {
    const c = await config(s);
    t.is(c.num_replicas, 3, s);
    t.true(c.max_bytes >= 64 * MiB, `${s}: ${c.max_bytes}`);
    bounds.push(c.max_bytes);
  }
  t.true(bounds[0] + bounds[1] <= 1024 * MiB, `both fit on each server: ${bounds}`);
  t.true(raised.lowered.length > 0 && raised.lowered.every((l) => / to .* \(was 700\.0 MiB\)$/.test(l)));

  // A store holding more than the other servers have room for stays in one copy, with JetStream's refusal; a stream
  // of another program is left as it is.
  // (A stream just raised answers a delete once its copies have elected a leader.)
  for (const s of ['OBJ_troupe-a', 'OBJ_troupe-b']) {
    await eventually(`${s} to have a leader`, async () => !!(await jsm.streams.info(s)).cluster?.leader);
    await jsm.streams.delete(s);
  }
  await store('OBJ_troupe-full', 900 * MiB);
  const chunk = new Uint8Array(900 * 1024);
  for (let i = 0; i < 560; i++) bus.nc.publish('$O.OBJ_troupe-full.x', chunk);
  await eventually(
    'the store to hold 480 MiB',
    async () => (await jsm.streams.info('OBJ_troupe-full')).state.bytes > 480 * MiB,
  );
  for (const s of ['OBJ_other1', 'OBJ_other2']) await store(s, 600 * MiB); // on the two other servers
  const again = await raiseReplicas(bus);
  t.is(again.fewest, 1);
  t.regex(again.refused.join('; '), /^OBJ_troupe-full: /);
  t.deepEqual(again.lowered, []);
  t.like(await config('OBJ_troupe-full'), { num_replicas: 1, max_bytes: 900 * MiB });
  t.like(await config('OBJ_other1'), { num_replicas: 1, max_bytes: 600 * MiB });
});
