// One node's objects as files (shared memory by default), written once and sealed by rename,
// so a reader on the same machine never sees half an object. Spilled objects are files in a second dir on disk.
import { mkdirSync, rmSync } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { byteLength } from '../runtime/codec.ts';

export class NodeStore {
  constructor(readonly dir: string, readonly spillDir?: string) {}

  init(): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    if (this.spillDir) mkdirSync(this.spillDir, { recursive: true, mode: 0o700 });
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

  /** Writes the parts one after the other, from where they are (no joining copy). */
  async writeTmp(id: string, parts: Uint8Array[]): Promise<void> {
    const fh = await open(this.tmpPath(id), 'w', 0o600);
    try {
      let written = 0;
      const total = byteLength(parts);
      while (written < total) {
        const { bytesWritten } = await fh.writev(remaining(parts, written));
        written += bytesWritten;
      }
    } finally {
      await fh.close();
    }
  }

  /** Makes a written object visible to readers. */
  seal(id: string): Promise<void> {
    return rename(this.tmpPath(id), this.path(id));
  }

  /** The whole object in one buffer of its own (readFile would read in small pieces). */
  async read(id: string): Promise<Uint8Array> {
    const fh = await open(this.path(id), 'r');
    try {
      const { size } = await fh.stat();
      const buf = new Uint8Array(size);
      for (let at = 0; at < size;) {
        const { bytesRead } = await fh.read(buf, at, size - at, at);
        if (bytesRead === 0) throw new Error(`object ${id} ended at ${at} of ${size} bytes`);
        at += bytesRead;
      }
      return buf;
    } finally {
      await fh.close();
    }
  }

  /** A range of the object, from shared memory or, once spilled, from disk. */
  async readRange(id: string, offset: number, length: number): Promise<Uint8Array> {
    let fh;
    try {
      fh = await open(this.path(id), 'r');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || !this.spillDir) throw e;
      fh = await open(this.spillPath(id), 'r');
    }
    try {
      const buf = Buffer.allocUnsafe(length);
      const { bytesRead } = await fh.read(buf, 0, length, offset);
      return buf.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  }

  /** Removes every file of the object: sealed, half-written, spilled. */
  async delete(id: string): Promise<void> {
    await Promise.all([
      rm(this.path(id), { force: true }),
      rm(this.tmpPath(id), { force: true }),
      this.spillDir ? rm(this.spillPath(id), { force: true }) : undefined,
    ]);
  }

  destroy(): void {
    rmSync(this.dir, { recursive: true, force: true });
    if (this.spillDir) rmSync(this.spillDir, { recursive: true, force: true });
  }
}

/** The parts after the first `skip` bytes (what a short writev left). */
function remaining(parts: Uint8Array[], skip: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const p of parts) {
    if (skip >= p.length) { skip -= p.length; continue; }
    out.push(skip ? p.subarray(skip) : p);
    skip = 0;
  }
  return out;
}

/** Ids come off the bus: never let one name a path outside the store. */
function checkId(id: string): string {
  if (typeof id !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(id)) throw new RangeError(`invalid object id ${JSON.stringify(id)}`);
  return id;
}
