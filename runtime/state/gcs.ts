// Cluster state in JetStream KV: nodes, actors, names, jobs. A restarted head rebuilds from here.
import type { KV } from '@nats-io/kv';
import type { Bus } from '../bus/bus.ts';
import type { ActorInfo } from '../protocol/actors.ts';
import type { JobInfo, NodeInfo } from '../protocol/cluster.ts';
import { encode, decode } from '../base/codec.ts';
import { openKv, whileJetStreamRecovers } from './buckets.ts';

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

  async list(): Promise<T[]> {
    const out: T[] = [];
    const keys = await whileJetStreamRecovers(async () => {
      const ks: string[] = [];
      for await (const k of await this.kv.keys()) ks.push(k);
      return ks;
    });
    for (const k of keys) {
      const v = await this.get(k);
      if (v !== undefined) out.push(v);
    }
    return out;
  }

  /** Calls back for every current entry, then for every change. Returns a stop function. */
  async watch(cb: (key: string, value: T | undefined) => void): Promise<() => void> {
    const it = await whileJetStreamRecovers(() => this.kv.watch({ key: '>' }));
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
