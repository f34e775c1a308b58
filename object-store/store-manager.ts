// The node daemon's side of the node store: what is in shared memory (an lru-cache bounded in bytes), what was
// spilled to disk, and copies fetched from other nodes. Writers and readers touch the files directly; they ask here
// only to seal a new object (which may first make room), to bring a spilled one back, or to fetch a remote one.
import { lstat, rm } from 'node:fs/promises';
import { LRUCache } from 'lru-cache';
import { ObjectLostError, ObjectStoreFullError } from '../runtime/base/errors.ts';
import { formatBytes } from '../runtime/base/bytes.ts';
import { createObjectFile, writeError, type NodeStore } from './node-store.ts';

export interface StoredObject {
  id: string;
  size: number;
  /** The process whose ref it is; its objects go when it dies. */
  owner: string;
  /** false: a copy fetched from another node, which may simply be dropped to make room. */
  primary: boolean;
  spilled: boolean;
}

export interface StoreStats {
  capacity: number;
  /** Bytes in shared memory. */
  used: number;
  objects: number;
  spilledObjects: number;
  spilledBytes: number;
  spillDir?: string;
}

export class StoreManager {
  /** Objects in shared memory, least recently used evicted first: copies are dropped, primaries spill. */
  private readonly memory: LRUCache<string, StoredObject>;
  private readonly onDisk = new Map<string, StoredObject>();
  /** One move at a time per object (spill, restore or fetch); others wait for it. */
  private readonly moving = new Map<string, Promise<void>>();
  private readonly freed = new Set<string>();
  /** Objects that could not be spilled (disk full, say): they stay in memory, over the bound, rather than be lost. */
  private readonly stuck = new Map<string, StoredObject>();

  constructor(
    private readonly store: NodeStore,
    readonly capacity: number,
    private readonly nodeId: string,
    private readonly log: (line: string) => void = (l) => console.error(l),
  ) {
    this.memory = new LRUCache<string, StoredObject>({
      maxSize: capacity,
      sizeCalculation: (o) => Math.max(1, o.size),
      dispose: (o, id, reason) => {
        if (reason === 'evict') this.pushOut(o, id);
      },
    });
  }

  /** A writer finished the object's tmp file: make room for it and make it visible. */
  async seal(id: string, size: number, owner: string, primary = true): Promise<void> {
    const tmp = this.store.tmpPath(id); // checks the id
    if (this.memory.has(id) || this.onDisk.has(id) || this.stuck.has(id)) {
      await rm(tmp, { force: true });
      return;
    } // a retried task wrote it twice
    const written = await lstat(tmp).catch(() => undefined);
    if (!written?.isFile() || written.size !== size) {
      await rm(tmp, { force: true });
      const what = written?.isFile() ? `${written.size} bytes were written, not ${size}` : 'nothing was written';
      throw new ObjectLostError(`object ${id}: ${what}`);
    }
    await this.track(
      id,
      (async () => {
        try {
          this.admit({ id, size, owner, primary, spilled: false });
        } catch (e) {
          await rm(tmp, { force: true });
          throw e;
        }
        try {
          await this.store.seal(id);
        } catch (e) {
          this.memory.delete(id);
          await rm(tmp, { force: true });
          throw e;
        }
      })(),
    );
  }

  /** Makes room (dropping copies, spilling the least recently used primaries) and accounts for the object. */
  private admit(o: StoredObject): void {
    if (o.size > this.capacity) {
      throw new ObjectStoreFullError(
        `object ${o.id} is ${formatBytes(o.size)}; the object store of node ${this.nodeId} holds ` +
          `${formatBytes(this.capacity)} (--object-store-memory)`,
      );
    }
    if (!this.store.spillDir) {
      // Nothing may spill: only copies can go, and referenced primaries stay put.
      let free = this.capacity - this.memory.calculatedSize;
      for (const id of [...this.memory.rkeys()]) {
        if (free >= o.size) break;
        const other = this.memory.peek(id);
        if (other && !other.primary) {
          this.memory.delete(id);
          void this.store.delete(id);
          free += other.size;
        }
      }
      if (free < o.size) {
        throw new ObjectStoreFullError(
          `the object store of node ${this.nodeId} is full: ${formatBytes(this.memory.calculatedSize)} of ` +
            `${formatBytes(this.capacity)} is held by objects still referenced, spilling is off, and object ${o.id} ` +
            `needs ${formatBytes(o.size)}`,
        );
      }
    }
    this.memory.set(o.id, o);
  }

  /** Evicted from memory: a copy is dropped, a primary goes to disk and comes back on the next read. The move waits
   * for any other move of the same object (its seal or restore may still be renaming the file into place). */
  private pushOut(o: StoredObject, id: string): void {
    const before = this.moving.get(id);
    if (!o.primary) {
      void Promise.resolve(before)
        .catch(() => undefined)
        .then(() => this.store.delete(id));
      return;
    }
    o.spilled = true;
    this.onDisk.set(id, o);
    this.track(
      id,
      (async () => {
        await before?.catch(() => undefined);
        if (this.freed.has(id)) return;
        try {
          await this.store.copyOut(id, this.store.spillPath(id)).catch(async (e) => {
            await rm(this.store.spillPath(id), { force: true }); // what a full disk let through
            throw e;
          });
          this.store.forget(id);
          await rm(this.store.path(id), { force: true });
          if (this.freed.has(id)) await this.store.delete(id);
        } catch (e) {
          // Still whole in shared memory: keep serving it from there, over the bound, rather than lose it.
          this.log(
            `troupe: could not spill object ${id} to ${this.store.spillDir}: ${(e as Error).message}; it stays in ` +
              `memory`,
          );
          o.spilled = false;
          this.onDisk.delete(id);
          this.stuck.set(id, o);
        }
      })(),
    );
  }

  private track(id: string, p: Promise<void>): Promise<void> {
    const done = p.finally(() => {
      if (this.moving.get(id) === done) this.moving.delete(id);
    });
    this.moving.set(id, done);
    done.catch(() => undefined);
    return done;
  }

  /** Ensures the object's file is in shared memory (reading a spilled one back); refreshes its recency. */
  async restore(id: string): Promise<void> {
    this.store.path(id); // checks the id
    while (this.moving.has(id)) await this.moving.get(id)!.catch(() => undefined);
    if (this.memory.get(id) || this.stuck.has(id)) return;
    const o = this.onDisk.get(id);
    if (!o)
      throw new ObjectLostError(
        `object ${id} is not in the object store of node ${this.nodeId} (freed, or never here)`,
      );
    const gone = () => new ObjectLostError(`object ${id} was freed while it was being read back`);
    await this.track(
      id,
      (async () => {
        await this.store.copyIn(id, this.store.spillPath(id)).catch(async (e) => {
          await rm(this.store.tmpPath(id), { force: true }); // a full store: no partial file stays
          throw writeError(e, `object ${id}, read back from disk,`, this.store.dir);
        });
        if (this.freed.has(id)) {
          await this.store.delete(id);
          throw gone();
        }
        this.onDisk.delete(id);
        o.spilled = false;
        try {
          this.admit(o);
        } catch (e) {
          this.onDisk.set(id, o); // still on disk
          o.spilled = true;
          await rm(this.store.tmpPath(id), { force: true });
          throw e;
        }
        await this.store.seal(id);
        this.store.forget(id);
        await rm(this.store.spillPath(id), { force: true });
        if (this.freed.has(id)) {
          await this.store.delete(id);
          throw gone();
        }
      })(),
    );
  }

  /** Brings a copy of another node's object here (the shared cache), unless one is here already. */
  async fetchCopy(
    id: string,
    size: number,
    owner: string,
    fetch: (write: (chunk: Uint8Array, offset: number) => Promise<void>) => Promise<void>,
  ): Promise<void> {
    this.store.path(id); // checks the id
    while (this.moving.has(id)) await this.moving.get(id)!.catch(() => undefined);
    if (this.memory.has(id) || this.onDisk.has(id) || this.stuck.has(id)) return this.restore(id);
    await this.track(
      id,
      (async () => {
        const tmp = this.store.tmpPath(id);
        try {
          const fh = await createObjectFile(tmp);
          try {
            await fh.truncate(size);
            await fetch(async (chunk, offset) => {
              await fh.write(chunk, 0, chunk.length, offset);
            });
          } finally {
            await fh.close();
          }
        } catch (e) {
          await rm(tmp, { force: true }); // on every failure: no partial copy stays
          throw (e as NodeJS.ErrnoException)?.code ? writeError(e, `a copy of object ${id}`, this.store.dir) : e;
        }
        await this.seal(id, size, owner, false);
      })(),
    );
  }

  /** Whether the object (or a copy of it) is here, in memory or on disk. */
  holds(id: string): boolean {
    return this.memory.has(id) || this.onDisk.has(id) || this.stuck.has(id);
  }

  /** The object's size as sealed here (its record); ObjectLostError when it is not here. */
  recordedSize(id: string): number {
    const o = this.memory.peek(id) ?? this.onDisk.get(id) ?? this.stuck.get(id);
    if (!o) throw new ObjectLostError(`object ${id} is not in the object store of node ${this.nodeId}`);
    return o.size;
  }

  /** A reader used the object: it is the last to be pushed out. */
  touch(id: string): void {
    this.memory.get(id);
  }

  async free(id: string): Promise<void> {
    this.memory.delete(id);
    this.onDisk.delete(id);
    this.stuck.delete(id);
    this.freed.add(id); // a spill under way deletes its copy when done
    setTimeout(() => this.freed.delete(id), 60_000).unref();
    await this.store.delete(id);
  }

  /** Frees what a dead process owned: nobody can ask for it any more. */
  async freeOwnedBy(owner: string): Promise<number> {
    const ids = this.all()
      .filter((o) => o.owner === owner)
      .map((o) => o.id);
    for (const id of ids) await this.free(id);
    return ids.length;
  }

  private all(): StoredObject[] {
    return [...this.memory.values(), ...this.onDisk.values(), ...this.stuck.values()];
  }

  owners(): Set<string> {
    return new Set(this.all().map((o) => o.owner));
  }

  list(): StoredObject[] {
    return this.all().map((o) => ({ ...o }));
  }

  stats(): StoreStats {
    let spilledBytes = 0,
      stuckBytes = 0;
    for (const o of this.onDisk.values()) spilledBytes += o.size;
    for (const o of this.stuck.values()) stuckBytes += o.size;
    return {
      capacity: this.capacity,
      used: this.memory.calculatedSize + stuckBytes,
      objects: this.memory.size + this.onDisk.size + this.stuck.size,
      spilledObjects: this.onDisk.size,
      spilledBytes,
      spillDir: this.store.spillDir,
    };
  }
}
