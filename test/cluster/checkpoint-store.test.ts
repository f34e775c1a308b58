// The checkpoint store on a real nats-server (runtime/state/checkpoints.ts): one job's checkpoints may hold at most
// its share of the store (half its bound unless TROUPE_CHECKPOINT_JOB_BYTES says otherwise), so that one job cannot
// fill it for every other; past the store's own bound, JetStream refuses the put. Either way nothing saved is
// dropped. shared-stores.test.ts goes through workers and their node.
import test, { type ExecutionContext } from 'ava';
import type { Bus } from '../../runtime/bus/bus.ts';
import { createObjectStore, SHARED_OBJECT_STORES } from '../../runtime/state/buckets.ts';
import { CheckpointStore } from '../../runtime/state/checkpoints.ts';
import { ClusterStoreFullError } from '../../runtime/base/errors.ts';
import { loneServer } from '../helpers/cluster.ts';

const MiB = 1024 * 1024;
const KB = (n: number) => new Uint8Array(n * 1000).fill(n % 256);

/** A lone nats-server with the checkpoint store bounded to 1 MiB, as the head makes it. */
async function bus(t: ExecutionContext): Promise<Bus> {
  t.timeout(30_000);
  const b = (await loneServer(t, 'checkpoint-store')).bus;
  t.is(await createObjectStore(b, SHARED_OBJECT_STORES.checkpoints, MiB), MiB);
  return b;
}

test("a job's checkpoints hold at most half the store; one it replaces counts once; others still save", async (t) => {
  const store = await CheckpointStore.open(await bus(t), undefined);
  await store.saveEncoded('a1', KB(300), 'job-a');
  const over = await t.throwsAsync(store.saveEncoded('a2', KB(300), 'job-a'), { instanceOf: ClusterStoreFullError });
  t.regex(over.message, /^job job-a's checkpoints hold 293\.0 KiB of the 512\.0 KiB one job may keep/);
  t.regex(over.message, /TROUPE_CHECKPOINT_JOB_BYTES/);
  t.is((await store.loadEncoded('a1'))?.length, 300_000, 'what was saved before stays');
  t.is(await store.loadEncoded('a2'), undefined);
  await store.saveEncoded('a1', KB(500), 'job-a'); // replaces the 300 kB: 500 kB in all
  t.is((await store.loadEncoded('a1'))?.length, 500_000);
  await store.saveEncoded('b1', KB(400), 'job-b');
  await store.delete('a1');
  await store.saveEncoded('a2', KB(300), 'job-a');
  // Saves that name no job (the head's, a node's own) count against none.
  await store.saveEncoded('unowned', KB(200));
});

test("with no share per job (0), a job may fill the store, and JetStream's bound refuses the rest", async (t) => {
  const store = await CheckpointStore.open(await bus(t), 0);
  await store.saveEncoded('a1', KB(600), 'job-a');
  const full = await t.throwsAsync(store.saveEncoded('a2', KB(600), 'job-a'), { instanceOf: ClusterStoreFullError });
  t.regex(full.message, /checkpoint store \(troupe-checkpoints\) is full: it holds at most 1\.0 MiB/);
  t.is((await store.loadEncoded('a1'))?.length, 600_000);
});

test('a share set in bytes is the bound', async (t) => {
  const store = await CheckpointStore.open(await bus(t), 100_000);
  await store.saveEncoded('a1', KB(100), 'job-a');
  const over = await t.throwsAsync(store.saveEncoded('a2', KB(1), 'job-a'), { instanceOf: ClusterStoreFullError });
  t.regex(over.message, /hold 97\.7 KiB of the 97\.7 KiB one job may keep/);
});
