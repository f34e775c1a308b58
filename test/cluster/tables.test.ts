// Reading a KV table (runtime/state/gcs.ts) on a real nats-server: read() gives what the bucket holds without making
// a consumer (a head taking over must not wait for JetStream's meta leader, which making one needs), and a watch
// from the revision it returned gives the changes after it, none before.
import test from 'ava';
import { openKv } from '../../runtime/state/buckets.ts';
import { Table } from '../../runtime/state/gcs.ts';
import { eventually, loneServer } from '../helpers/cluster.ts';

test('read() gives the current entries and no consumer is made; watch() goes on after its revision', async (t) => {
  t.timeout(20_000);
  const bus = (await loneServer(t, 'tables')).bus;
  const kv = await openKv(bus, 'troupe-test-table', { history: 1 });
  const table = new Table<{ n: number }>(kv);
  t.deepEqual((await table.read()).entries, new Map(), 'an empty bucket');

  await table.put('a', { n: 1 });
  await table.put('b', { n: 2 });
  await table.put('a', { n: 3 }); // a newer value
  await table.put('c', { n: 4 });
  await table.delete('c');
  await kv.put('d', 'not json'); // garbage someone else wrote: skipped
  await table.put('e', { n: 5 });

  const last = (await kv.status()).streamInfo.state.last_seq;
  // Every JetStream API request of this connection, as sent (a consumer is made with $JS.API.CONSUMER.CREATE…).
  const asked: string[] = [];
  const request = bus.nc.request.bind(bus.nc);
  bus.nc.request = (subject, ...rest) => {
    asked.push(subject);
    return request(subject, ...rest);
  };
  const { entries, revision } = await table.read();
  t.deepEqual(Object.fromEntries(entries), { a: { n: 3 }, b: { n: 2 }, e: { n: 5 } });
  t.is(revision, last, "read at the bucket's last revision");
  t.deepEqual((await table.list()).map((v) => v.n).sort(), [2, 3, 5]);
  t.true(asked.some((s) => s.startsWith('$JS.API.STREAM.MSG.GET.')));
  t.deepEqual(
    asked.filter((s) => s.startsWith('$JS.API.CONSUMER.')),
    [],
    'read() and list() ask the stream leader for messages: no consumer is made',
  );
  bus.nc.request = request;

  const seen: Array<[string, number | undefined]> = [];
  const stop = await table.watch((key, v) => seen.push([key, v?.n]), revision);
  t.teardown(stop);
  await table.put('b', { n: 6 });
  await table.delete('a');
  await eventually('both changes', async () => seen.length === 2, 5000);
  t.deepEqual(seen, [
    ['b', 6],
    ['a', undefined],
  ]);
});
