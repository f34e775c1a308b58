// The JetStream object store that holds shipped runtime envs: project archives, package manifests and packages, each
// named by its content (or by name@version). The store keeps a SHA-256 digest of each object and checks it on read.
import { createReadStream, createWriteStream } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ObjectStore } from '@nats-io/obj';
import type { Bus } from '../bus/bus.ts';
import { openObjectStore, putIntoShared, SHARED_OBJECT_STORES } from '../state/buckets.ts';

export const ENV_BUCKET = SHARED_OBJECT_STORES.runtimeEnvs;

export const openEnvStore = (bus: Bus): Promise<ObjectStore> => openObjectStore(bus, ENV_BUCKET);

export async function hasObject(os: ObjectStore, name: string): Promise<boolean> {
  const info = await os.info(name);
  return !!info && !info.deleted;
}

/** Puts a file or bytes under `name`; returns the bytes sent. A full store (TROUPE_RUNTIME_ENV_STORE_BYTES) is a
 * ClusterStoreFullError. */
export function putObject(os: ObjectStore, name: string, from: string | Uint8Array): Promise<number> {
  return putIntoShared(os, 'runtimeEnvs', async () => {
    if (typeof from !== 'string') {
      await os.putBlob({ name }, from);
      return from.length;
    }
    const info = await os.put({ name }, Readable.toWeb(createReadStream(from)) as ReadableStream<Uint8Array>);
    return info.size;
  });
}

/** Reads `name` into the file `to`; returns its bytes, or undefined when the store has no such object. Throws when
 * the read fails or the digest does not match. */
export async function getObject(os: ObjectStore, name: string, to: string): Promise<number | undefined> {
  const r = await os.get(name);
  if (!r) return undefined;
  await pipeline(Readable.fromWeb(r.data as import('node:stream/web').ReadableStream), createWriteStream(to));
  const e = await r.error;
  if (e) throw e;
  return r.info.size;
}

/** Reads `name` whole (a manifest). */
export async function getBytes(os: ObjectStore, name: string): Promise<Uint8Array | undefined> {
  const b = await os.getBlob(name);
  return b ?? undefined;
}
