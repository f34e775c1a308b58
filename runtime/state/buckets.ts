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
import { NoRespondersError, TimeoutError } from '@nats-io/nats-core';
import { Kvm, type KV, type KvOptions } from '@nats-io/kv';
import { Objm, type ObjectStore } from '@nats-io/obj';
import type { Bus } from '../bus/bus.ts';

const LOST_CREATE_RACE = new Set([10065, 10058]);

/** Copies of each stream asked for: a stream in a JetStream cluster keeps working while a majority of its copies do,
 * so three survive the loss of one server. */
export const WANTED_REPLICAS = 3;
/** "replicas > 1 not supported in non-clustered mode" (a lone nats-server), "insufficient resources" (fewer
 * JetStream servers up than copies). */
const TOO_FEW_SERVERS = new Set([10074, 10023]);

/** Creates the KV bucket, or binds to it when it exists or another process created it at the same moment. */
export function openKv(bus: Bus, name: string, opts: Partial<KvOptions> = {}): Promise<KV> {
  const kvm = new Kvm(bus.nc);
  return whileJetStreamRecovers(() => replicated((replicas) => kvm.create(name, { ...opts, replicas })));
}

/** The object stores every job shares. Only the head creates them (at start, before anyone joins): a stream is made
 * with subjects its creator names, and one made by a job's code could capture the cluster's traffic. */
export const SHARED_OBJECT_STORES = { checkpoints: 'troupe-checkpoints', runtimeEnvs: 'troupe-runtime-envs' } as const;

/** Binds to the object store, which must exist (the head made it); `create`: the head's creating it, or binding to it
 * when it exists or another process created it at the same moment. */
export function openObjectStore(bus: Bus, name: string, o: { create?: boolean } = {}): Promise<ObjectStore> {
  const objm = new Objm(bus.nc);
  return whileJetStreamRecovers(() =>
    o.create ? replicated((replicas) => objm.create(name, { replicas })) : objm.open(name),
  );
}

/** The head, at start: creates the shared object stores. */
export async function createSharedObjectStores(bus: Bus): Promise<void> {
  await Promise.all(Object.values(SHARED_OBJECT_STORES).map((name) => openObjectStore(bus, name, { create: true })));
}

/** Creates a stream with WANTED_REPLICAS copies, or with one where JetStream cannot keep more (`status` then warns).
 * A stream that exists is bound as it is: creating reads its info first and adds only what is missing. */
export async function replicated<T>(create: (replicas: number) => Promise<T>): Promise<T> {
  try {
    return await createOrBind(() => create(WANTED_REPLICAS));
  } catch (e) {
    if (!(e instanceof JetStreamApiError && TOO_FEW_SERVERS.has(e.code))) throw e;
    return createOrBind(() => create(1));
  }
}

/** How long a JetStream request is repeated while the cluster recovers (see whileJetStreamRecovers). */
const RECOVERY_MS = 15_000;

/** Runs a JetStream request again while nobody answers it (no responders, or a timeout), for up to RECOVERY_MS: in a
 * NATS cluster a new stream's subjects reach the other servers a moment after it is made, and when a server is lost
 * its streams and the JetStream meta group elect new leaders. Only for requests that may be repeated: making or
 * binding a bucket, reads, a put, a delete (a compare-and-set that timed out may have been applied). */
export async function whileJetStreamRecovers<T>(request: () => Promise<T>): Promise<T> {
  const until = Date.now() + RECOVERY_MS;
  for (;;) {
    try {
      return await request();
    } catch (e) {
      if (!unanswered(e) || Date.now() > until) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

function unanswered(e: unknown): boolean {
  for (let c = e; c instanceof Error; c = c.cause)
    if (c instanceof NoRespondersError || c instanceof TimeoutError) return true;
  return false;
}

async function createOrBind<T>(create: () => Promise<T>): Promise<T> {
  try {
    return await create();
  } catch (e) {
    if (!(e instanceof JetStreamApiError && LOST_CREATE_RACE.has(e.code))) throw e;
    return create(); // the stream is there now: create() finds it and binds (a real overlap fails again, and throws)
  }
}
