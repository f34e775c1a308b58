// The head lease (runtime/head/leadership.ts) on a real nats-server, with the failures a NATS cluster that lost a
// server shows its heads: reads answered by a copy that lags behind, and reads lost on a connection that is up (sent to
// the server that is gone). Neither may depose a leader or hold a standby back from a leader that stopped renewing.
import test, { type ExecutionContext } from 'ava';
import { TimeoutError } from '@nats-io/nats-core';
import type { KV } from '@nats-io/kv';
import { builtinIdentity, createIdentities } from '../../runtime/cluster/identities.ts';
import { startNatsServer } from '../../runtime/cluster/nats-server.ts';
import { Bus } from '../../runtime/bus/bus.ts';
import { Leadership } from '../../runtime/head/leadership.ts';
import { HEAD_LEASE_KEY } from '../../runtime/protocol/cluster.ts';
import { sleep } from '../../runtime/base/processes.ts';
import { tempDir } from '../helpers/cluster.ts';

const LEASE_MS = 1000;

/** What the tests reach inside a Leadership: its KV, to make its reads fail or lag as a NATS cluster's can. */
type Inside = { kv: KV; renewTimer: NodeJS.Timeout; renew(): Promise<void> };
const inside = (l: Leadership) => l as unknown as Inside;

async function heads(t: ExecutionContext, n: number): Promise<{ buses: Bus[]; heads: Leadership[] }> {
  // A test that hangs fails on its own, with its teardown run (a run that times out kills the worker and leaves the
  // nats-server behind).
  t.timeout(20_000);
  const dir = tempDir(t);
  const token = builtinIdentity(createIdentities(dir), 'head').credential;
  const nats = await startNatsServer({ dir, host: '127.0.0.1', detached: false });
  t.teardown(() => nats.stop());
  const buses = await Promise.all(
    Array.from({ length: n }, (_, i) => Bus.connect({ address: nats.localAddress, token, name: `head-${i}` })),
  );
  const heads = await Promise.all(buses.map((b) => Leadership.open(b, LEASE_MS)));
  // These heads share one process, where a lease held by another head of this process is one a head restarted in
  // place left behind (Leadership.gone): they must wait for each other as heads of two machines do.
  for (const h of heads) (h as unknown as { gone(): boolean }).gone = () => false;
  t.teardown(async () => {
    await Promise.all(heads.map((h) => h.stop()));
    await Promise.all(buses.map((b) => b.close()));
  });
  return { buses, heads };
}

test('a read from a copy that lags never deposes the leader', async (t) => {
  const {
    heads: [first, second],
  } = await heads(t, 2);
  t.true(await first!.acquire());
  const kv = inside(second!).kv;
  const before = (await kv.get(HEAD_LEASE_KEY))!; // the first head's lease, term 1
  clearInterval(inside(first!).renewTimer);
  t.true(await second!.acquire());
  t.is(second!.term, 2);
  // A renewal lost, and a read answered by a copy still at the first head's lease.
  const { get, update } = { get: kv.get.bind(kv), update: kv.update.bind(kv) };
  kv.get = async () => before;
  kv.update = async () => {
    throw new TimeoutError();
  };
  await inside(second!).renew();
  kv.get = get;
  kv.update = update;
  await sleep(LEASE_MS);
  t.true(second!.valid, 'still the leader, renewing');
  t.is(await Promise.race([second!.lost, sleep(10).then(() => 'not lost')]), 'not lost');
});

test('a standby whose reads are lost on a live connection takes over a leader that stopped renewing', async (t) => {
  const {
    heads: [leader, standby],
  } = await heads(t, 2);
  t.true(await leader!.acquire());
  const kv = inside(standby!).kv;
  const get = kv.get.bind(kv);
  let cut = false;
  let lost = 0;
  // Once the leader is cut off, every read of the standby is lost (the copy it went to is on the server cut off).
  kv.get = async (k: string) => {
    if (!cut) return get(k);
    lost++;
    throw new TimeoutError();
  };
  const took = standby!.acquire();
  await sleep(LEASE_MS / 2);
  clearInterval(inside(leader!).renewTimer); // the leader is cut off: no renewal lands
  await sleep(LEASE_MS / 3); // the standby read its last renewal
  cut = true;
  t.true(await took);
  t.is(standby!.term, 2);
  t.true(lost > 2, `${lost} reads lost`);
});

test('a standby that lost its own connection counts the lease again from its next read', async (t) => {
  const {
    buses: [, standbyBus],
    heads: [leader, standby],
  } = await heads(t, 2);
  t.true(await leader!.acquire());
  const kv = inside(standby!).kv;
  const get = kv.get.bind(kv);
  let reads = 0;
  kv.get = async (k: string) => {
    if (reads++ === 0) return get(k);
    standbyBus!.disconnects++; // as nats.js reports a lost connection
    throw new TimeoutError();
  };
  const took = standby!.acquire();
  await sleep(LEASE_MS / 2);
  clearInterval(inside(leader!).renewTimer);
  // Three leases without a renewal, but never read on one connection: it may be this head that lost the bus.
  t.is(await Promise.race([took, sleep(3 * LEASE_MS).then(() => 'waiting')]), 'waiting');
  kv.get = get; // its reads land again: now it counts, and takes over
  t.true(await took);
  t.is(standby!.term, 2);
});
