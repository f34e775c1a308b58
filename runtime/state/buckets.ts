// Creating the JetStream buckets (KV, object store) that several processes create at the same moment.
//
// The head, every node daemon, drivers and the CLI each create the buckets they use: create() binds to a bucket that
// exists. nats-server before 2.9.16 (Debian's 2.9.10 among them) checks a new stream's name and its subjects under
// two separate locks (fixed by nats-io/nats-server#4013). Two clients creating the same stream at once can both pass
// the name check; the later one then finds the earlier one's stream in the subject check and is refused with
// "subjects overlap with an existing stream" (10065), or "stream name already in use" (10058) where their configs
// differ. By the time that answer comes the winner's stream exists, so creating again finds it and binds.
// (One connection's creates cannot race: the server runs its API requests one after another.)
import {
  JetStreamApiError,
  jetstream,
  jetstreamManager,
  type MsgRequest,
  type NextMsgRequest,
  type StreamInfo,
} from '@nats-io/jetstream';
import { NoRespondersError, TimeoutError } from '@nats-io/nats-core';
import { Kvm, type KV, type KvOptions } from '@nats-io/kv';
import { Objm, type ObjectStore } from '@nats-io/obj';
import type { Bus } from '../bus/bus.ts';
import type { StoreStatus } from '../protocol/cluster.ts';
import { ClusterStoreFullError } from '../base/errors.ts';
import { formatBytes } from '../base/bytes.ts';
import { sleep } from '../base/processes.ts';

const LOST_CREATE_RACE = new Set([10065, 10058]);

/** Copies of each stream asked for on the bus `bus` talks to: a stream in a JetStream cluster keeps working while a
 * majority of its copies do, so three survive the loss of any one server, and only five survive the loss of any two,
 * which a bus of five servers is meant to (three copies on five servers stop once the two lost held two of them).
 * Counted from the servers the bus's own server knows now (INFO's connect_urls): a bus that is still forming is
 * raised later (raiseReplicas()). */
export function wantedReplicas(bus: Bus): number {
  return (bus.nc.info?.connect_urls?.length ?? 0) >= 5 ? 5 : 3;
}
/** "replicas > 1 not supported in non-clustered mode" (a lone nats-server), "insufficient resources" and "no
 * suitable peers for placement" (fewer JetStream servers up than copies). */
const TOO_FEW_SERVERS = new Set([10074, 10023, 10005]);

/** Creates the KV bucket, or binds to it when it exists or another process created it at the same moment. Its
 * requests give up after `timeoutMs` (nats.js's default: 5 s). Reads go to the bucket's leader, not to any copy (a
 * direct get): a copy may lag behind what was just written, and in a NATS cluster that lost a server, reads sent to
 * that server's copy are lost until the others drop their route to it (24–50 s on nats-server 2.9.10). */
export function openKv(bus: Bus, name: string, opts: Partial<KvOptions> = {}, timeoutMs?: number): Promise<KV> {
  const kvm = new Kvm(timeoutMs ? jetstream(bus.nc, { timeout: timeoutMs }) : bus.nc);
  return whileJetStreamRecovers(
    () => replicated(wantedReplicas(bus), (replicas) => kvm.create(name, { ...opts, replicas, allow_direct: false })),
    bus,
  );
}

/** A stream get of the first message on `subject` at or after `seq`, which nats-server answers since 2.9: how troupe
 * reads a stream without a consumer (Table.read, readJobLog). nats.js types the query for direct gets only, which
 * troupe's streams do not allow (see openKv). */
export const nextOnSubject = (subject: string, seq: number): MsgRequest =>
  ({ seq, next_by_subj: subject }) as NextMsgRequest as MsgRequest;

/** The object stores every job shares. Only the head creates them (at start, before anyone joins): a stream is made
 * with subjects its creator names, and one made by a job's code could capture the cluster's traffic. */
export const SHARED_OBJECT_STORES = { checkpoints: 'troupe-checkpoints', runtimeEnvs: 'troupe-runtime-envs' } as const;
export type SharedStore = keyof typeof SHARED_OBJECT_STORES;

/** What each shared store is called in messages, the setting that bounds it, and what makes room in it. */
const ABOUT: Record<SharedStore, { what: string; setting: string; room: string }> = {
  checkpoints: {
    what: 'checkpoint store',
    setting: 'TROUPE_CHECKPOINT_STORE_BYTES',
    room: "an actor's checkpoint is deleted when the actor ends, a training run's when the run does",
  },
  runtimeEnvs: {
    what: 'store of shipped code',
    setting: 'TROUPE_RUNTIME_ENV_STORE_BYTES',
    room: 'the head deletes what no job it knows uses',
  },
};

/** Binds to the object store, which must exist (the head made it: createObjectStore). */
export function openObjectStore(bus: Bus, name: string): Promise<ObjectStore> {
  const objm = new Objm(bus.nc);
  return whileJetStreamRecovers(() => objm.open(name), bus);
}

/** JetStream's "maximum bytes exceeded": a put into a full stream whose policy is to refuse new messages (an object
 * store's). The put leaves nothing behind, and nothing stored before is dropped. */
const MAX_BYTES_EXCEEDED = 10077;
/** "insufficient storage resources available" (a lone server), "insufficient resources" or "no suitable peers for
 * placement, insufficient storage" (a cluster's servers): JetStream reserves a stream's bound on its disk when the
 * stream is made. */
const noRoom = (e: unknown): boolean =>
  e instanceof JetStreamApiError && ([10047, 10023].includes(e.code) || /insufficient storage/i.test(e.message));
/** The least a shared store is given where JetStream cannot reserve what was asked (see createObjectStore). */
const LEAST_STORE_BYTES = 64 * 1024 * 1024;

/** The head, at start: creates the shared object stores, each bounded to `bounds[store]` bytes (0: unbounded).
 * Returns the bound each has, which is less than asked where JetStream could not reserve that much. */
export async function createSharedObjectStores(
  bus: Bus,
  bounds: Record<SharedStore, number>,
): Promise<Record<SharedStore, number>> {
  // One after the other, in a fixed order: where JetStream has room for one bound but not both, the same store
  // gets it every time.
  const got = {} as Record<SharedStore, number>;
  for (const s of Object.keys(SHARED_OBJECT_STORES) as SharedStore[])
    got[s] = await createObjectStore(bus, SHARED_OBJECT_STORES[s], bounds[s]);
  return got;
}

/** Makes the object store with at most `asked` bytes (0: unbounded), or binds to it when it exists or another process
 * made it at the same moment; where JetStream cannot reserve the bytes, asks half as many, down to LEAST_STORE_BYTES
 * (a small disk should not stop the head from starting). Returns the bound it has (-1: unbounded). */
export async function createObjectStore(bus: Bus, name: string, asked: number): Promise<number> {
  const objm = new Objm(bus.nc);
  let bytes = asked > 0 ? asked : -1;
  for (;;) {
    try {
      await whileJetStreamRecovers(
        () => replicated(wantedReplicas(bus), (replicas) => objm.create(name, { replicas, max_bytes: bytes })),
        bus,
      );
      return await whileJetStreamRecovers(() => applyBound(bus, `OBJ_${name}`, bytes));
    } catch (e) {
      if (!noRoom(e) || bytes < 0 || bytes / 2 < LEAST_STORE_BYTES) throw e;
      bytes = Math.floor(bytes / 2);
    }
  }
}

/** A store made before (by an earlier head, or under another setting) takes the bound asked for, but never one below
 * what it holds: JetStream would make room by dropping its oldest messages, parts of other objects. */
async function applyBound(bus: Bus, stream: string, bytes: number): Promise<number> {
  const jsm = await jetstreamManager(bus.nc);
  const si = await jsm.streams.info(stream);
  const want = bytes < 0 ? -1 : Math.max(bytes, si.state.bytes);
  if (si.config.max_bytes === want) return want;
  await jsm.streams.update(stream, { max_bytes: want });
  return want;
}

/** How full each shared store is (`troupe status`). */
export async function sharedStoreUsage(bus: Bus): Promise<StoreStatus[]> {
  const jsm = await jetstreamManager(bus.nc);
  return Promise.all(
    Object.values(SHARED_OBJECT_STORES).map(async (name) => {
      const si = await jsm.streams.info(`OBJ_${name}`);
      return { name, bytes: si.state.bytes, maxBytes: si.config.max_bytes };
    }),
  );
}

/** Puts into a shared store, turning JetStream's refusal of a full one into a ClusterStoreFullError that says how large
 * the store is, what makes room in it and which setting bounds it. */
export async function putIntoShared<T>(os: ObjectStore, store: SharedStore, put: () => Promise<T>): Promise<T> {
  try {
    return await put();
  } catch (e) {
    if (!(e instanceof JetStreamApiError && e.code === MAX_BYTES_EXCEEDED)) throw e;
    const max = await os.status().then(
      (s) => s.streamInfo.config.max_bytes,
      () => undefined,
    );
    const a = ABOUT[store];
    throw new ClusterStoreFullError(
      `the cluster's ${a.what} (${SHARED_OBJECT_STORES[store]}) is full` +
        `${max && max > 0 ? `: it holds at most ${formatBytes(max)}` : ''}, and nothing in it was dropped. ` +
        `${a.room[0].toUpperCase()}${a.room.slice(1)}; ${a.setting} on the head's machine raises the bound (read ` +
        'when the head starts)',
      { cause: e },
    );
  }
}

/** The streams troupe makes: KV buckets, object stores, the job logs. */
const TROUPE_STREAM = /^(KV_|OBJ_)?troupe-/;

/** Creates a stream with `wanted` copies (wantedReplicas()), or with as many of three and one as JetStream can keep
 * (`status` then warns). A stream that exists is bound as it is: creating reads its info first and adds only what is
 * missing. */
export async function replicated<T>(wanted: number, create: (replicas: number) => Promise<T>): Promise<T> {
  try {
    return await createOrBind(() => create(wanted));
  } catch (e) {
    if (wanted === 1 || !(e instanceof JetStreamApiError && TOO_FEW_SERVERS.has(e.code))) throw e;
    return replicated(wanted > 3 ? 3 : 1, create);
  }
}

/** Raises each of troupe's streams (KV buckets, object stores, job logs) kept in fewer copies than wantedReplicas() to
 * that many, or to three where JetStream cannot keep more: the bus's third (or fifth) server came up after they were
 * made (the head of a bus troupe runs starts once two of them are). Each copy reserves a bounded store's bytes on its
 * server's disk: where the servers are up (an unbounded stream got that many copies) but a store's bound does not fit
 * on enough of them, the store is raised with half its bound, down to what it holds (at least LEAST_STORE_BYTES), as
 * a head starting on a small disk does: the state's copies matter more than the store's room. Returns the fewest
 * copies any stream has now, JetStream's refusal for each stream left with fewer than three, and each bound it took
 * down. */
export async function raiseReplicas(bus: Bus): Promise<{ fewest: number; refused: string[]; lowered: string[] }> {
  const jsm = await jetstreamManager(bus.nc);
  const wanted = wantedReplicas(bus);
  const streams: StreamInfo[] = [];
  for await (const si of jsm.streams.list()) if (TROUPE_STREAM.test(si.config.name)) streams.push(si);
  // Unbounded streams first: the copies they get say how many servers are up for the bounded ones.
  const bounded = (si: StreamInfo) => si.config.max_bytes > 0;
  streams.sort((a, b) => Number(bounded(a)) - Number(bounded(b)));
  let serversUp = 0;
  let fewest = Number.POSITIVE_INFINITY;
  const refused: string[] = [];
  const lowered: string[] = [];
  for (const si of streams) {
    const { name, num_replicas: had, max_bytes: asked } = si.config;
    const least = Math.max(LEAST_STORE_BYTES, si.state.bytes);
    let copies = had;
    let why = '';
    raise: for (const more of [...new Set([wanted, 3])].filter((r) => r > copies))
      for (let bytes = asked; ; bytes = Math.floor(bytes / 2)) {
        try {
          copies = (await jsm.streams.update(name, { num_replicas: more, max_bytes: bytes })).config.num_replicas;
          if (bytes !== asked) lowered.push(`${name} to ${formatBytes(bytes)} (was ${formatBytes(asked)})`);
          break raise;
        } catch (e) {
          if (!(e instanceof JetStreamApiError && TOO_FEW_SERVERS.has(e.code))) throw e;
          why = e.message;
          if (!bounded(si) || serversUp < more || bytes / 2 < least) break;
        }
      }
    if (!bounded(si)) serversUp = Math.max(serversUp, copies);
    if (copies < 3 && why) refused.push(`${name}: ${why}`);
    fewest = Math.min(fewest, copies);
  }
  return { fewest: Number.isFinite(fewest) ? fewest : wanted, refused, lowered };
}

/** Asks each of troupe's replicated streams whose leader is the server `server` to elect another. The head keeps the
 * leaders off the server it talks through, which is the one on its machine: a head machine lost then does not take
 * the leaders of the lease and of the state with it, and a standby can take the lease and read the state without
 * first waiting for new leaders to be elected (seconds on nats-server 2.9). Returns how many moved; one that refuses
 * (its copies still catching up after raiseReplicas(), say) is asked again next time. */
export async function moveLeadersOff(bus: Bus, server: string): Promise<number> {
  const jsm = await jetstreamManager(bus.nc);
  let moved = 0;
  for await (const si of jsm.streams.list()) {
    if (!TROUPE_STREAM.test(si.config.name) || si.config.num_replicas < 2 || si.cluster?.leader !== server) continue;
    const answer = await bus.nc
      .request(`$JS.API.STREAM.LEADER.STEPDOWN.${si.config.name}`)
      .then((m) => m.json<{ success?: boolean }>())
      .catch(() => undefined);
    if (answer?.success) moved++;
  }
  return moved;
}

/** Resolves once JetStream answers. A NATS cluster has none until a majority of its servers is up (two of three), so
 * a head on such a bus waits here, and `waiting` says so every 30 s. */
export async function untilJetStreamAnswers(bus: Bus, waiting: (forMs: number) => void): Promise<void> {
  const since = Date.now();
  let said = since;
  for (;;) {
    try {
      await (await jetstreamManager(bus.nc, { timeout: 2000 })).getAccountInfo();
      return;
    } catch {
      if (Date.now() - said >= 30_000) {
        said = Date.now();
        waiting(said - since);
      }
      await sleep(500);
    }
  }
}

/** How long a JetStream request is repeated while the cluster recovers (see whileJetStreamRecovers). */
const RECOVERY_MS = 15_000;

/** Runs a JetStream request again while nobody answers it (no responders, a timeout, or JetStream saying it is
 * unavailable), for up to RECOVERY_MS: in a NATS cluster a new stream's subjects reach the other servers a moment
 * after it is made, and when a server is lost its streams and the JetStream meta group elect new leaders. Only for
 * requests that may be repeated: making or binding a bucket, reads, a put, a delete (a compare-and-set that timed out
 * may have been applied). Given `bus`, a lone server without JetStream (its INFO says so) fails it at once: there,
 * nothing will answer. */
export async function whileJetStreamRecovers<T>(request: () => Promise<T>, bus?: Bus): Promise<T> {
  const until = Date.now() + RECOVERY_MS;
  for (;;) {
    try {
      return await request();
    } catch (e) {
      const lone = bus && !bus.nc.info?.jetstream && !bus.nc.info?.cluster;
      if (!unanswered(e) || lone || Date.now() > until) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

/** "JetStream system temporarily unavailable": a NATS cluster's servers are electing their JetStream leader. */
const JETSTREAM_UNAVAILABLE = 10008;

function unanswered(e: unknown): boolean {
  for (let c = e; c instanceof Error; c = c.cause)
    if (
      c instanceof NoRespondersError ||
      c instanceof TimeoutError ||
      (c instanceof JetStreamApiError && c.code === JETSTREAM_UNAVAILABLE)
    )
      return true;
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
