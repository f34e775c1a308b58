// Cluster state in JetStream KV: nodes, actors, names, jobs. A restarted head rebuilds from here.
import { Bucket, type KV } from '@nats-io/kv';
import type { Bus } from '../bus/bus.ts';
import type { ActorInfo } from '../protocol/actors.ts';
import type { JobInfo, NodeInfo } from '../protocol/cluster.ts';
import { encode, decode } from '../base/codec.ts';
import { nextOnSubject, openKv, whileJetStreamRecovers } from './buckets.ts';

/** How many ranges of a bucket's stream read() asks for at once. */
const READERS = 16;

/** A KV bucket of documents: JSON (readable with the nats CLI), or msgpack where values hold bytes. */
export class Table<T> {
  constructor(
    readonly kv: KV,
    private readonly format: 'json' | 'msgpack' = 'json',
  ) {}

  private parse(bytes: Uint8Array): T | undefined {
    try {
      return this.format === 'json' ? (JSON.parse(new TextDecoder().decode(bytes)) as T) : decode<T>(bytes);
    } catch {
      return undefined; // garbage written by someone else: skip it
    }
  }

  async get(key: string): Promise<T | undefined> {
    const e = await whileJetStreamRecovers(() => this.kv.get(key));
    if (e?.operation !== 'PUT') return undefined;
    return this.parse(e.value);
  }

  async put(key: string, value: T): Promise<void> {
    const bytes = this.format === 'json' ? JSON.stringify(value) : encode(value);
    await whileJetStreamRecovers(() => this.kv.put(key, bytes));
  }

  async delete(key: string): Promise<void> {
    await whileJetStreamRecovers(() => this.kv.delete(key));
  }

  /** Every current entry, and the revision it was read at (watch() goes on from there). Read from the bucket's stream
   * leader message by message, without a consumer: making one needs JetStream's meta leader, which a NATS cluster that
   * just lost the old head's machine may still be electing (seconds), while the stream leaders answer at once (the
   * head keeps them off its own server). Up to READERS ranges of the stream are read at once. */
  async read(): Promise<{ entries: Map<string, T>; revision: number }> {
    const b = this.kv;
    if (!(b instanceof Bucket)) throw new TypeError('a Table reads a bucket opened by openKv()');
    const stream = b.bucketName();
    const { first_seq: first, last_seq: last } = (await whileJetStreamRecovers(() => b.jsm.streams.info(stream))).state;
    const readers = Math.max(1, Math.min(READERS, last - first + 1));
    const span = Math.ceil(Math.max(1, last - first + 1) / readers);
    const latest = new Map<string, { seq: number; value: T | undefined }>();
    let revision = last;
    const readRange = async (from: number, to: number) => {
      for (let seq = from; ; ) {
        const next = nextOnSubject(b.subjectForKey('>'), seq);
        const sm = await whileJetStreamRecovers(() => b.jsm.streams.getMessage(stream, next));
        if (!sm || sm.seq > to) return;
        revision = Math.max(revision, sm.seq);
        const e = b.smToEntry(sm);
        // A key written again while it is read is met twice: its later message wins.
        if ((latest.get(e.key)?.seq ?? 0) < sm.seq)
          latest.set(e.key, { seq: sm.seq, value: e.operation === 'PUT' ? this.parse(e.value) : undefined });
        seq = sm.seq + 1;
      }
    };
    // The last range reads on past `last`, to what was written meanwhile.
    await Promise.all(
      Array.from({ length: readers }, (_, i) =>
        readRange(first + i * span, i === readers - 1 ? Number.POSITIVE_INFINITY : first + (i + 1) * span - 1),
      ),
    );
    const entries = new Map<string, T>();
    for (const [key, { value }] of [...latest].sort((x, y) => x[1].seq - y[1].seq))
      if (value !== undefined) entries.set(key, value);
    return { entries, revision };
  }

  async list(): Promise<T[]> {
    return [...(await this.read()).entries.values()];
  }

  /** Calls back for every current entry, then for every change; or, given the revision read() returned, only for the
   * changes after it. Returns a stop function. */
  async watch(cb: (key: string, value: T | undefined) => void, after?: number): Promise<() => void> {
    const it = await whileJetStreamRecovers(() =>
      this.kv.watch({ key: '>', ...(after === undefined ? {} : { resumeFromRevision: after + 1 }) }),
    );
    (async () => {
      for await (const e of it) {
        // A callback that throws must not end the watch: nothing would be watched again.
        try {
          if (e.operation !== 'PUT') cb(e.key, undefined);
          else {
            const v = this.parse(e.value);
            if (v !== undefined) cb(e.key, v);
          }
        } catch (err) {
          console.error(`troupe: a watcher of ${e.key} failed:`, err);
        }
      }
    })().catch(() => undefined);
    return () => it.stop();
  }
}

export class Gcs {
  private constructor(
    readonly nodes: Table<NodeInfo>,
    readonly jobs: Table<JobInfo>,
    readonly actors: Table<ActorInfo>,
    readonly names: Table<{ actorId: string }>,
  ) {}

  /** `timeoutMs`: how long one JetStream request waits for its answer (nats.js's default, 5 s, when not given); the
   * Table's reads, writes and watches send it again while JetStream recovers. */
  static async open(bus: Bus, timeoutMs?: number): Promise<Gcs> {
    // Every process opens them; openKv() copes with another process creating the same bucket at the same moment.
    const [nodes, jobs, actors, names] = await Promise.all(
      ['troupe-nodes', 'troupe-jobs', 'troupe-actors', 'troupe-names'].map((name) =>
        openKv(bus, name, { history: 1 }, timeoutMs),
      ),
    );
    return new Gcs(new Table(nodes), new Table(jobs), new Table(actors, 'msgpack'), new Table(names));
  }
}

/** The key of an actor's name in the names table. */
export function nameKey(namespace: string, name: string): string {
  return `${namespace}.${name}`;
}
