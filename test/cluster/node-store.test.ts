// A node's store files on their own: whole reads in slices, and range reads through kept-open files that never
// outlive the file they were opened on.
import test from 'ava';
import { copyFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { NodeStore } from '../../object-store/node-store.ts';
import { tempDir } from '../helpers/cluster.ts';

function storeIn(t: Parameters<typeof tempDir>[0]): NodeStore {
  const dir = tempDir(t);
  const store = new NodeStore(join(dir, 'shm'), join(dir, 'spill'));
  store.init();
  t.teardown(() => store.destroy());
  return store;
}

async function put(store: NodeStore, id: string, bytes: Uint8Array): Promise<void> {
  await store.writeTmp(id, [bytes.subarray(0, 5), bytes.subarray(5)]);
  await store.seal(id);
}

const pattern = (n: number, k: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + k) & 0xff);
/** Byte for byte (ava's deepEqual walks every element, too slow for megabytes). */
const same = (a: Uint8Array, b: Uint8Array) =>
  Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

test('a large object reads back whole, in slices at once, byte for byte', async (t) => {
  const store = storeIn(t);
  const bytes = pattern(20 * 1024 * 1024 + 12_345, 1); // 3 slices, the last one short
  await put(store, 'big', bytes);
  t.true(same(await store.read('big'), bytes));
});

test('range reads keep the file open, follow it to the spill dir, and end with the object', async (t) => {
  const store = storeIn(t);
  const bytes = pattern(100_000, 2);
  await put(store, 'obj', bytes);
  t.true(same(await store.readRange('obj', 10, 1000), bytes.subarray(10, 1010)));
  // Spilled as the store manager does it: copied to disk, then gone from shared memory.
  copyFileSync(store.path('obj'), store.spillPath('obj'));
  store.forget('obj');
  rmSync(store.path('obj'));
  t.true(same(await store.readRange('obj', 50_000, 10), bytes.subarray(50_000, 50_010)));
  // Deleted, then written again under the same id (a task run again): reads see the new bytes, not the old file.
  await store.delete('obj');
  await t.throwsAsync(store.readRange('obj', 0, 10), { code: 'ENOENT' });
  const again = pattern(100_000, 3);
  await put(store, 'obj', again);
  t.true(same(await store.readRange('obj', 0, 10), again.subarray(0, 10)));
});
