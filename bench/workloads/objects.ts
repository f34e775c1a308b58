// Object store workloads: put+get of tensors on one node against memcpy, and a cross-node get against raw NATS.
// Workers import this module by URL for `makeFloats`.
import type { ChildProcess } from 'node:child_process';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { remote, put, get } from 'troupe';
import type { Bus } from '../../runtime/bus/bus.ts';
import { chunkSize } from '../../object-store/transfer.ts';
import { startReady, type Spawner } from './start-ready.ts';

/** A large result, stored where the task runs. */
export const makeFloats = remote((n: number, v: number) => new Float32Array(n).fill(v));

/** Bytes per second of `put(tensor)` then `get` in this process, for fresh tensors of `bytes` each. */
export async function putGetTensor(bytes: number, rounds: number): Promise<number> {
  const x = tf.fill([bytes / 4], 1.5);
  await get(put(x)); // warm
  let secs = 0;
  for (let i = 0; i < rounds; i++) {
    const t0 = performance.now();
    const back = await get(put(x));
    secs += (performance.now() - t0) / 1000;
    if (back.size !== x.size) throw new Error('put+get returned a different tensor');
    back.dispose();
  }
  x.dispose();
  return (bytes * rounds) / secs;
}

/** Bytes per second of Buffer.copy of the same bytes: the memcpy reference. */
export function memcpy(bytes: number, rounds: number): number {
  const src = Buffer.alloc(bytes, 1);
  const dst = Buffer.alloc(bytes);
  src.copy(dst); // warm: pages faulted in
  const t0 = performance.now();
  for (let i = 0; i < rounds; i++) src.copy(dst);
  return (bytes * rounds) / ((performance.now() - t0) / 1000);
}

/** Raw nats.js bulk transfer of `bytes` from another process: the same chunks and in-flight count troupe uses. */
export async function rawNatsBulk(
  bus: Bus,
  address: string,
  token: string,
  bytes: number,
  rounds: number,
): Promise<number> {
  const subject = `bench.bulk.${process.pid}`;
  const server = await startBulkServer(address, token, subject, bytes);
  try {
    return await fetchBulk(bus, subject, bytes, rounds);
  } finally {
    server.kill();
  }
}

/** raw-bulk-server.ts serving `bytes` on `subject`, here or where `on` starts it (another host); ready once this
 * resolves. The caller kills it. */
export function startBulkServer(
  address: string,
  token: string,
  subject: string,
  bytes: number,
  on?: Spawner,
): Promise<ChildProcess> {
  return startReady(
    new URL('./raw-bulk-server.ts', import.meta.url),
    { BULK_ADDRESS: address, BULK_TOKEN: token, BULK_SUBJECT: subject, BULK_BYTES: String(bytes) },
    on,
  );
}

/** Bytes per second of fetching `bytes` from a bulk server on `subject` over raw nats.js requests, `rounds` times
 * after one that warms up: troupe's chunk size, 8 requests in flight. */
export async function fetchBulk(bus: Bus, subject: string, bytes: number, rounds: number): Promise<number> {
  const chunk = chunkSize(bus);
  const fetchAll = async () => {
    const out = new Uint8Array(bytes);
    let next = 0;
    const worker = async () => {
      while (next < bytes) {
        const offset = next;
        const length = Math.min(chunk, bytes - offset);
        next += length;
        const req = new Uint8Array(16);
        new DataView(req.buffer).setFloat64(0, offset);
        new DataView(req.buffer).setFloat64(8, length);
        const m = await bus.nc.request(subject, req, { timeout: 30_000 });
        out.set(m.data, offset);
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    return out;
  };
  await fetchAll(); // warm
  let secs = 0;
  for (let i = 0; i < rounds; i++) {
    const t0 = performance.now();
    const data = await fetchAll();
    new Float32Array(data.buffer).slice(); // what a get does last: the typed array the user receives
    secs += (performance.now() - t0) / 1000;
  }
  return (bytes * rounds) / secs;
}
