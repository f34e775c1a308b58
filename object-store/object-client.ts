// How a process stores values and follows ObjectRefs to them: owner lookup, local file reads,
// chunked fetches from other nodes. Every process (driver or worker) has one.
import { encode, decode } from '../runtime/codec.ts';
import { ObjectLostError, NoRespondersError } from '../runtime/errors.ts';
import type { Bus } from '../runtime/transport.ts';
import { ObjectRef } from './object-ref.ts';
import type { ObjectLocation } from './location.ts';
import { OwnerTable } from './owner-table.ts';
import { LRUCache } from 'lru-cache';
import type { NodeStore } from './node-store.ts';

/** Under the server's default max_payload (1 MiB) with room for the envelope. */
const CHUNK = 512 * 1024;
const CHUNKS_IN_FLIGHT = 8;

export const objectSubjects = {
  procLocate: (proc: string) => `troupe.proc.${proc}.obj.locate`,
  procRead: (proc: string) => `troupe.proc.${proc}.obj.read`,
  nodeRead: (node: string) => `troupe.node.${node}.obj.read`,
  nodeFree: (node: string) => `troupe.node.${node}.obj.free`,
};

export interface ObjectClientOptions {
  bus: Bus;
  procId: string;
  /** The node daemon on this machine and its store, when there is one. */
  nodeId?: string;
  store?: NodeStore;
  inlineThreshold: number;
}

export class ObjectClient {
  readonly owned = new OwnerTable();
  /** Large values held in memory when there is no local store. */
  private readonly held = new Map<string, Uint8Array>();
  /** Where borrowed objects are: sealed objects never move, so one answer serves every later get. */
  private readonly located = new LRUCache<string, ObjectLocation>({ max: 10_000 });
  /** One owner lookup in flight per borrowed object, however many callers wait. */
  private readonly locating = new Map<string, Promise<ObjectLocation>>();
  private readonly readyWaiters = new Map<string, Set<() => void>>();

  constructor(private readonly o: ObjectClientOptions) {}

  /** Answers other processes asking where our objects are, and serves bytes we hold in memory. */
  serve(): void {
    const { bus, procId } = this.o;
    bus.serve(objectSubjects.procLocate(procId), (req: { id: string }) => {
      const p = this.owned.whenSealed(req.id);
      if (!p) throw new ObjectLostError(`object ${req.id} is not known to its owner ${procId} (freed, or the owner restarted)`);
      return p;
    });
    bus.serve(objectSubjects.procRead(procId), (req: { id: string; offset: number; length: number }) => {
      const b = this.held.get(req.id);
      if (!b) throw new ObjectLostError(`object ${req.id} is not held by ${procId}`);
      return b.subarray(req.offset, req.offset + req.length);
    });
  }

  /** Serializes a value into a location: inline, a file in the local store, or our memory. */
  async store(id: string, value: unknown): Promise<ObjectLocation> {
    return this.storeBytes(id, encode(value));
  }

  async storeBytes(id: string, bytes: Uint8Array): Promise<ObjectLocation> {
    if (bytes.length <= this.o.inlineThreshold) return { inline: bytes };
    if (this.o.store && this.o.nodeId) {
      await this.o.store.write(id, bytes);
      return { node: this.o.nodeId, size: bytes.length };
    }
    this.held.set(id, bytes);
    return { proc: this.o.procId, size: bytes.length };
  }

  /** Where the ref's value is, waiting until it exists. */
  locate(ref: ObjectRef): Promise<ObjectLocation> {
    const mine = this.owned.whenSealed(ref.id);
    if (mine) return mine;
    if (ref.owner === this.o.procId) return Promise.reject(new ObjectLostError(`object ${ref.id} was freed`));
    const known = this.located.get(ref.id);
    if (known) return Promise.resolve(known);
    let p = this.locating.get(ref.id);
    if (!p) {
      p = this.o.bus.request<ObjectLocation>(objectSubjects.procLocate(ref.owner), { id: ref.id }, { timeoutMs: 0 }).then(
        (loc) => { if (!('error' in loc)) this.located.set(ref.id, loc); return loc; },
        (e) => {
          if (e instanceof NoRespondersError) throw new ObjectLostError(`object ${ref.id} is lost: its owner ${ref.owner} is gone`, { cause: e });
          throw e;
        },
      ).finally(() => this.locating.delete(ref.id));
      this.locating.set(ref.id, p);
    }
    return p;
  }

  /** Drops what this process holds for an owned object that was freed. */
  forget(id: string): void {
    this.held.delete(id);
  }

  /** Calls back once the ref's value exists (or failed, or is lost). Returns a remover for callers that stop waiting. */
  whenReady(ref: ObjectRef, cb: () => void): () => void {
    const remove = this.owned.onSealed(ref.id, cb);
    if (remove) return remove;
    if (this.located.has(ref.id)) { cb(); return () => undefined; }
    let waiters = this.readyWaiters.get(ref.id);
    if (!waiters) {
      const set = (waiters = new Set());
      this.readyWaiters.set(ref.id, set);
      const done = () => { this.readyWaiters.delete(ref.id); for (const f of set) f(); };
      this.locate(ref).then(done, done);
    }
    const set = waiters;
    set.add(cb);
    return () => set.delete(cb);
  }

  /** The value a location points to. Throws the producing task's error for a failed object. */
  async load<T>(id: string, loc: ObjectLocation): Promise<T> {
    if ('error' in loc) throw loc.error;
    if ('inline' in loc) return decode<T>(loc.inline);
    return decode<T>(await this.loadBytes(id, loc));
  }

  private async loadBytes(id: string, loc: { node: string; size: number } | { proc: string; size: number }): Promise<Uint8Array> {
    if ('node' in loc && loc.node === this.o.nodeId && this.o.store) {
      try {
        return await this.o.store.read(id);
      } catch (e) {
        throw new ObjectLostError(`object ${id} is missing from this node's store`, { cause: e });
      }
    }
    const subject = 'node' in loc ? objectSubjects.nodeRead(loc.node) : objectSubjects.procRead(loc.proc);
    try {
      return await fetchChunked(this.o.bus, subject, id, loc.size);
    } catch (e) {
      if (e instanceof NoRespondersError) {
        throw new ObjectLostError(`object ${id} is lost: ${'node' in loc ? `node ${loc.node}` : `process ${loc.proc}`} that held it is gone`, { cause: e });
      }
      throw e;
    }
  }

  async get<T>(ref: ObjectRef<T>): Promise<T> {
    return this.load<T>(ref.id, await this.locate(ref));
  }

  /** Decodes a call's arguments, replacing each top-level ref by its value. The caller located them already (deps),
   * so values come straight from their holder; refs nested deeper stay refs, as in Ray. */
  async resolveArgs(bytes: Uint8Array, deps: Record<string, ObjectLocation>): Promise<unknown[]> {
    const args = decode<unknown[]>(bytes);
    if (!Array.isArray(args)) throw new TypeError('arguments must be an array');
    for (let i = 0; i < args.length; i++) {
      const a = args[i];
      if (a instanceof ObjectRef) args[i] = deps[a.id] ? await this.load(a.id, deps[a.id]) : await this.get(a);
    }
    return args;
  }
}

/** Reads `size` bytes in chunks, several in flight; checks that every chunk is whole. */
export async function fetchChunked(bus: Bus, subject: string, id: string, size: number): Promise<Uint8Array> {
  const out = new Uint8Array(size);
  let next = 0;
  const worker = async () => {
    while (next < size) {
      const offset = next;
      const length = Math.min(CHUNK, size - offset);
      next += length;
      for (let attempt = 0; ; attempt++) {
        const chunk = await bus.request<Uint8Array>(subject, { id, offset, length });
        if (chunk.length === length) { out.set(chunk, offset); break; }
        if (attempt >= 2) throw new ObjectLostError(`object ${id}: chunk at ${offset} came back with ${chunk.length} of ${length} bytes`);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(CHUNKS_IN_FLIGHT, Math.ceil(size / CHUNK)) }, worker));
  return out;
}
