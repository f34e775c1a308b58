// One node's objects as files (shared memory by default), written once and sealed by rename,
// so a reader on the same machine never sees half an object. Spilled objects are files in a second dir on disk.
import { chmodSync, chownSync, constants, mkdirSync, rmSync } from 'node:fs';
import { copyFile, open, rename, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { LRUCache } from 'lru-cache';
import { markAsOurs } from './leftovers.ts';
import { byteLength } from '../runtime/base/codec.ts';
import { ObjectLostError, ObjectStoreFullError, ProtocolError, TroupeError } from '../runtime/base/errors.ts';

/** Objects are readable by the store dir's group: only the node's own user where workers run as it (the dir is
 * 0700), its workers' where they run as another user (NodeStore.init). */
const OBJECT_MODE = 0o640;
/** Files in the store dir are opened without following a link, and read only when regular: where workers run as
 * another user they may write in the dir, and what they plant there (a link to a file of root's, a FIFO) must not
 * make the node daemon or a driver read, write or wait on anything else. */
const READ = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;
const CREATE = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

/** Opens an object's file for reading (see READ), with its size; anything but a regular file there is a lost
 * object. */
async function openObject(id: string, path: string): Promise<{ fh: FileHandle; size: number }> {
  let fh: FileHandle;
  try {
    fh = await open(path, READ);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ELOOP') throw e;
    throw new ObjectLostError(`object ${id}: its file in the store is a link, not what its writer made`);
  }
  const st = await fh.stat();
  if (st.isFile()) return { fh, size: st.size };
  await fh.close();
  throw new ObjectLostError(`object ${id}: its file in the store is not a regular file`);
}

/** Creates `path` for writing, never through what is there (see CREATE): a file left by an earlier try goes first. */
export async function createObjectFile(path: string): Promise<FileHandle> {
  try {
    return await open(path, CREATE, OBJECT_MODE);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    await rm(path, { force: true });
    return await open(path, CREATE, OBJECT_MODE);
  }
}

/** Reads of one large object: at most this many slices at once (libuv has 4 threads), each at least SLICE_BYTES. */
const READ_SLICES = 4;
const SLICE_BYTES = 8 * 1024 * 1024;

/** A file kept open for range reads; closed once evicted and no read uses it. */
interface OpenFile {
  fh: Promise<FileHandle>;
  reads: number;
  evicted: boolean;
}

export class NodeStore {
  /** Objects being read in ranges (chunks sent to other nodes): opened once, not once per chunk. */
  private readonly openFiles = new LRUCache<string, OpenFile>({
    max: 16,
    dispose: (f) => {
      f.evicted = true;
      closeIfIdle(f);
    },
  });

  constructor(
    readonly dir: string,
    readonly spillDir?: string,
  ) {}

  /** Makes the directories, marked as this process's: if it is killed, the next node here removes them. With
   * `workerGid` (workers run as another user), the store dir is shared with that group: objects and lanes are made
   * in it by workers, the node daemon and drivers alike. New files take its group (set-group-id), and only their
   * owner (or root) may remove or replace them (sticky). */
  init(workerGid?: number): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    if (workerGid !== undefined) {
      chownSync(this.dir, -1, workerGid);
      chmodSync(this.dir, 0o3770);
    }
    markAsOurs(this.dir);
    if (this.spillDir) {
      mkdirSync(this.spillDir, { recursive: true, mode: 0o700 });
      markAsOurs(this.spillDir);
    }
  }

  /** The sealed object's file. */
  path(id: string): string {
    return join(this.dir, checkId(id));
  }

  /** Where a writer puts the bytes before the node daemon seals them. */
  tmpPath(id: string): string {
    return join(this.dir, `.${checkId(id)}.tmp`);
  }

  spillPath(id: string): string {
    if (!this.spillDir) throw new Error('spilling is off');
    return join(this.spillDir, checkId(id));
  }

  /** Writes the parts one after the other, from where they are (no joining copy). A write that fails (the store's
   * file system full, say) leaves no file behind, and says why in a typed error. */
  async writeTmp(id: string, parts: Uint8Array[]): Promise<void> {
    const tmp = this.tmpPath(id);
    const total = byteLength(parts);
    try {
      const fh = await createObjectFile(tmp);
      try {
        let written = 0;
        while (written < total) {
          const { bytesWritten } = await fh.writev(remaining(parts, written));
          written += bytesWritten;
        }
      } finally {
        await fh.close();
      }
    } catch (e) {
      await rm(tmp, { force: true }).catch(() => undefined);
      throw writeError(e, `object ${id} (${total} bytes)`, this.dir);
    }
  }

  /** Makes a written object visible to readers. */
  seal(id: string): Promise<void> {
    return rename(this.tmpPath(id), this.path(id));
  }

  /** The whole object in one buffer of its own (readFile would read in small pieces). A large one is read in a few
   * slices at once: most of the time goes to faulting in the new buffer's pages, which several threads do faster. */
  async read(id: string): Promise<Uint8Array> {
    const { fh, size } = await openObject(id, this.path(id));
    try {
      const buf = new Uint8Array(size);
      const slices = Math.min(READ_SLICES, Math.ceil(size / SLICE_BYTES));
      const step = Math.ceil(size / slices / 4096) * 4096;
      await Promise.all(
        Array.from({ length: slices }, async (_, i) => {
          const end = Math.min(size, (i + 1) * step);
          for (let at = i * step; at < end; ) {
            const { bytesRead } = await fh.read(buf, at, end - at, at);
            if (bytesRead === 0) throw new Error(`object ${id} ended at ${at} of ${size} bytes`);
            at += bytesRead;
          }
        }),
      );
      return buf;
    } finally {
      await fh.close();
    }
  }

  /** A range of the object, from shared memory or, once spilled, from disk. */
  async readRange(id: string, offset: number, length: number): Promise<Uint8Array> {
    let f = this.openFiles.get(id);
    if (!f) {
      f = { fh: this.openForReading(id), reads: 0, evicted: false };
      this.openFiles.set(id, f);
      f.fh.catch(() => {
        if (this.openFiles.get(id) === f) this.openFiles.delete(id);
      });
    }
    f.reads++;
    try {
      const buf = Buffer.allocUnsafe(length);
      const { bytesRead } = await (await f.fh).read(buf, 0, length, offset);
      return buf.subarray(0, bytesRead);
    } finally {
      f.reads--;
      closeIfIdle(f);
    }
  }

  private async openForReading(id: string): Promise<FileHandle> {
    try {
      return (await openObject(id, this.path(id))).fh;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || !this.spillDir) throw e;
      return await open(this.spillPath(id), 'r'); // the spill dir is the daemon's alone
    }
  }

  /** Copies the object's file to `to` (its spill file). From the file opened as openObject() does, through its fd:
   * copyFile given the path would follow a link planted there. */
  async copyOut(id: string, to: string): Promise<void> {
    const { fh } = await openObject(id, this.path(id));
    try {
      await copyFile(`/proc/self/fd/${fh.fd}`, to);
    } finally {
      await fh.close();
    }
  }

  /** Copies `from` (a spill file) to the object's tmp file, which it creates (see CREATE), for seal(). */
  async copyIn(id: string, from: string): Promise<void> {
    const tmp = this.tmpPath(id);
    await rm(tmp, { force: true });
    await copyFile(from, tmp, constants.COPYFILE_EXCL);
  }

  /** Closes what range reads keep open of the object: call it when a file of it is removed, or the open handle would
   * keep the removed file's memory (or disk) in use. */
  forget(id: string): void {
    this.openFiles.delete(id);
  }

  /** Removes every file of the object: sealed, half-written, spilled. */
  async delete(id: string): Promise<void> {
    this.forget(id);
    await Promise.all([
      rm(this.path(id), { force: true }),
      rm(this.tmpPath(id), { force: true }),
      this.spillDir ? rm(this.spillPath(id), { force: true }) : undefined,
    ]);
  }

  destroy(): void {
    this.openFiles.clear();
    rmSync(this.dir, { recursive: true, force: true });
    if (this.spillDir) rmSync(this.spillDir, { recursive: true, force: true });
  }
}

/** A failed write as the putter should hear it: a full file system is ObjectStoreFullError. */
export function writeError(e: unknown, what: string, dir: string): Error {
  const code = (e as NodeJS.ErrnoException)?.code;
  const why = (e as Error)?.message ?? String(e);
  if (code === 'ENOSPC' || code === 'EDQUOT' || code === 'EFBIG')
    return new ObjectStoreFullError(`no room for ${what} in the object store at ${dir}: ${why}`, { cause: e });
  return new TroupeError(`could not write ${what} to the object store at ${dir}: ${why}`, { cause: e });
}

function closeIfIdle(f: OpenFile): void {
  if (f.evicted && f.reads === 0) f.fh.then((fh) => fh.close()).catch(() => undefined);
}

/** The parts after the first `skip` bytes (what a short writev left). */
function remaining(parts: Uint8Array[], skip: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const p of parts) {
    if (skip >= p.length) {
      skip -= p.length;
      continue;
    }
    out.push(skip ? p.subarray(skip) : p);
    skip = 0;
  }
  return out;
}

/** Ids come off the bus: never let one name a path outside the store. */
function checkId(id: string): string {
  if (typeof id !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(id))
    throw new ProtocolError(`invalid object id ${JSON.stringify(id)}`);
  return id;
}
