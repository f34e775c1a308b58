// One node's objects as files (shared memory by default), written once and sealed by rename,
// so a reader on the same machine never sees half an object.
import { mkdirSync, rmSync } from 'node:fs';
import { open, readFile, writeFile, rename, readdir, stat, rm } from 'node:fs/promises';
import { join } from 'node:path';

export class NodeStore {
  constructor(readonly dir: string) {}

  init(): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
  }

  path(id: string): string {
    // ids come off the bus: never let one name a path outside the store
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) throw new RangeError(`invalid object id ${JSON.stringify(id)}`);
    return join(this.dir, id);
  }

  async write(id: string, bytes: Uint8Array): Promise<void> {
    const final = this.path(id); // validates the id before any file is made
    const tmp = join(this.dir, `.${id}.tmp`);
    await writeFile(tmp, bytes, { mode: 0o600 });
    await rename(tmp, final);
  }

  read(id: string): Promise<Buffer> {
    return readFile(this.path(id));
  }

  async readRange(id: string, offset: number, length: number): Promise<Uint8Array> {
    const fh = await open(this.path(id), 'r');
    try {
      const buf = Buffer.allocUnsafe(length);
      const { bytesRead } = await fh.read(buf, 0, length, offset);
      return buf.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  }

  async list(): Promise<Array<{ id: string; size: number }>> {
    let names: string[];
    try { names = await readdir(this.dir); } catch { return []; }
    const out: Array<{ id: string; size: number }> = [];
    for (const n of names) {
      if (n.startsWith('.')) continue;
      try { out.push({ id: n, size: (await stat(this.path(n))).size }); } catch { /* freed meanwhile */ }
    }
    return out;
  }

  async delete(id: string): Promise<void> {
    await rm(this.path(id), { force: true });
  }

  destroy(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}
