// Creating the JetStream buckets (KV, object store) that several processes create at the same moment.
//
// The head, every node daemon, drivers and the CLI each create the buckets they use: create() binds to a bucket that
// exists. nats-server before 2.9.16 (Debian's 2.9.10 among them) checks a new stream's name and its subjects under
// two separate locks (fixed by nats-io/nats-server#4013). Two clients creating the same stream at once can both pass
// the name check; the later one then finds the earlier one's stream in the subject check and is refused with
// "subjects overlap with an existing stream" (10065), or "stream name already in use" (10058) where their configs
// differ. By the time that answer comes the winner's stream exists, so creating again finds it and binds.
// (One connection's creates cannot race: the server runs its API requests one after another.)
import { JetStreamApiError } from '@nats-io/jetstream';
import { Kvm, type KV, type KvOptions } from '@nats-io/kv';
import { Objm, type ObjectStore } from '@nats-io/obj';
import type { Bus } from '../bus/bus.ts';

const LOST_CREATE_RACE = new Set([10065, 10058]);

/** Creates the KV bucket, or binds to it when it exists or another process created it at the same moment. */
export function openKv(bus: Bus, name: string, opts: Partial<KvOptions> = {}): Promise<KV> {
  const kvm = new Kvm(bus.nc);
  return createOrBind(() => kvm.create(name, { ...opts }));
}

/** The object stores every job shares. Only the head creates them (at start, before anyone joins): a stream is made
 * with subjects its creator names, and one made by a job's code could capture the cluster's traffic. */
export const SHARED_OBJECT_STORES = { checkpoints: 'troupe-checkpoints', runtimeEnvs: 'troupe-runtime-envs' } as const;

/** Binds to the object store, which must exist (the head made it); `create`: the head's creating it, or binding to it
 * when it exists or another process created it at the same moment. */
export function openObjectStore(bus: Bus, name: string, o: { create?: boolean } = {}): Promise<ObjectStore> {
  const objm = new Objm(bus.nc);
  return o.create ? createOrBind(() => objm.create(name)) : objm.open(name);
}

/** The head, at start: creates the shared object stores. */
export async function createSharedObjectStores(bus: Bus): Promise<void> {
  await Promise.all(Object.values(SHARED_OBJECT_STORES).map((name) => openObjectStore(bus, name, { create: true })));
}

async function createOrBind<T>(create: () => Promise<T>): Promise<T> {
  try {
    return await create();
  } catch (e) {
    if (!(e instanceof JetStreamApiError && LOST_CREATE_RACE.has(e.code))) throw e;
    return create(); // the stream is there now: create() finds it and binds (a real overlap fails again, and throws)
  }
}
