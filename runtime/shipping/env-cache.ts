// The node's side of shipping: materializes a job's runtime env into a per-hash directory of its cache, fetching from
// the object store (asking the driver to upload first when the store lacks an item), and keeps the cache bounded.
//
// <dir>/envs/<key>      a job's copy: its project's files, node_modules built from packages, node_modules/troupe
// <dir>/packages/<obj>  one package as shipped (per name@version, or per content), shared by jobs through hard links
// <dir>/tmp/            unpacked here first, then renamed into place: another node daemon on the machine sharing the
//                       cache sees a whole directory or none
import { randomBytes, createHash } from 'node:crypto';
import { copyFile, link, lstat, mkdir, readdir, readlink, rename, rm, stat, symlink, utimes } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { ObjectStore } from '@nats-io/obj';
import type { Bus } from '../bus/bus.ts';
import { ProtocolError, RuntimeEnvError } from '../base/errors.ts';
import { troupeHome } from '../base/config.ts';
import { formatBytes } from '../base/bytes.ts';
import type { RuntimeEnvRef } from '../protocol/jobs.ts';
import { subjects } from '../protocol/subjects.ts';
import { checkManifest, objectNames, type PackageEntry } from './manifest.ts';
import { hashFile, unpack } from './pack.ts';
import { getBytes, getObject, openEnvStore } from './env-store.ts';
import { sameMachine } from './machine.ts';
import { installedPackage, troupeRoot } from './troupe-install.ts';

export interface EnvCacheOptions {
  /** Default `<TROUPE_HOME>/runtime-envs`. */
  dir?: string;
  /** Bytes the cache may hold before the least recently used entries not in use go. Default
   * TROUPE_RUNTIME_ENV_CACHE_BYTES, else 10 GiB. */
  maxBytes?: number;
  /** One line per materialized env. */
  log?: (line: string) => void;
}

/** Where a cache gets items: the object store (StoreSource), or anything that can read one by name. */
export interface EnvSource {
  /** Writes the item into the file `to`; its bytes, or undefined when there is no such item. */
  file(name: string, to: string, jobId: string | undefined): Promise<number | undefined>;
  bytes(name: string, jobId: string | undefined): Promise<Uint8Array | undefined>;
}

/** Items from the JetStream object store; one missing is asked of the job's driver (which uploads it) first. A read
 * that fails (another driver replacing the same object at that moment) is tried once more. */
export class StoreSource implements EnvSource {
  private store?: Promise<ObjectStore>;

  constructor(
    private readonly bus: Bus,
    /** How long to wait for a driver to upload an item (default 10 minutes). */
    private readonly shipTimeoutMs = 600_000,
  ) {}

  async file(name: string, to: string, jobId: string | undefined): Promise<number | undefined> {
    const os = await this.open();
    const n = await getObject(os, name, to).catch(() => undefined);
    if (n !== undefined) return n;
    await this.askDriver(name, jobId);
    return getObject(os, name, to).catch(() => getObject(os, name, to));
  }

  async bytes(name: string, jobId: string | undefined): Promise<Uint8Array | undefined> {
    const os = await this.open();
    const b = await getBytes(os, name);
    if (b) return b;
    await this.askDriver(name, jobId);
    return getBytes(os, name);
  }

  private async askDriver(name: string, jobId: string | undefined): Promise<void> {
    if (!jobId) return;
    try {
      await this.bus.request(subjects.jobShip(jobId), { name }, { timeoutMs: this.shipTimeoutMs });
    } catch (e) {
      throw new RuntimeEnvError(`could not get ${name} of job ${jobId} from its driver: ${(e as Error).message}`, {
        cause: e,
      });
    }
  }

  private open(): Promise<ObjectStore> {
    this.store ??= openEnvStore(this.bus);
    return this.store;
  }
}

/** What a worker of the job runs in. */
export interface LocalEnv {
  /** The job's root here: the driver's root itself (same machine, or nothing shipped) or a copy. */
  root: string;
  env?: Record<string, string>;
}

interface Entry {
  bytes: number;
  lastUsed: number;
  holds: number;
}

export class EnvCache {
  readonly dir: string;
  readonly maxBytes: number;
  private readonly making = new Map<string, Promise<string>>();
  private readonly entries = new Map<string, Entry>();
  private loaded?: Promise<void>;

  constructor(
    private readonly source: EnvSource,
    private readonly o: EnvCacheOptions = {},
  ) {
    this.dir = o.dir ?? join(troupeHome(), 'runtime-envs');
    this.maxBytes = o.maxBytes ?? (Number(process.env.TROUPE_RUNTIME_ENV_CACHE_BYTES) || 10 * 2 ** 30);
  }

  /** Where a worker of this job runs: the root in place when nothing was shipped or the driver is on this machine,
   * else the copy (materialized first). */
  async localEnv(job: { id: string; root: string; env?: RuntimeEnvRef }): Promise<LocalEnv> {
    const ref = job.env;
    const root =
      ref?.workingDir && !sameMachine(ref.origin, job.root) ? await this.materialize(ref, job.root, job.id) : job.root;
    return ref?.env ? { root, env: ref.env } : { root };
  }

  /** A shipped directory here: itself on the machine it was shipped from, else this node's copy (from the store
   * alone: for `troupe job submit`, whose CLI uploaded everything and left). */
  async localDir(ref: RuntimeEnvRef, dir: string): Promise<string> {
    return sameMachine(ref.origin, dir) ? dir : this.materialize(ref, dir);
  }

  /** The local directory holding the env's copy of the project, made at most once per hash (concurrent calls share
   * one). `jobId` names the driver to ask for items the store lacks; without it (or with the driver gone) they must
   * be in the store already (uploadRuntimeEnv). */
  materialize(ref: RuntimeEnvRef, jobRoot: string, jobId?: string): Promise<string> {
    if (!ref.workingDir) return Promise.resolve(jobRoot);
    const key = createHash('sha256')
      .update(`${ref.workingDir.sha256}:${ref.packages?.sha256 ?? ''}:${troupeRoot()}`)
      .digest('hex')
      .slice(0, 40);
    let p = this.making.get(key);
    if (!p) {
      p = this.make(key, ref, jobId).finally(() => this.making.delete(key));
      this.making.set(key, p);
    }
    return p;
  }

  /** A worker uses the env at `dir`: it is not evicted until the returned release is called. */
  hold(dir: string): () => void {
    const e = this.entries.get(dir);
    if (!e) return () => undefined; // the root in place: not ours
    e.holds++;
    e.lastUsed = Date.now();
    let released = false;
    return () => {
      if (released) return;
      released = true;
      e.holds--;
      e.lastUsed = Date.now();
    };
  }

  private async make(key: string, ref: RuntimeEnvRef, jobId: string | undefined): Promise<string> {
    await this.load();
    const dir = join(this.dir, 'envs', key);
    if (existsSync(dir)) {
      this.touch(dir);
      return dir;
    }
    const started = Date.now();
    const fetched = { bytes: 0 };
    const tmp = await this.tmpPath();
    try {
      const archive = `${tmp}.tgz`;
      const sha = ref.workingDir!.sha256;
      await this.fetch(objectNames.workingDir(sha), archive, jobId, fetched, sha);
      await unpack(archive, tmp);
      await rm(archive, { force: true });
      // Only the manifest makes node_modules (a project archive never holds one; a link there could lead elsewhere).
      await rm(join(tmp, 'node_modules'), { recursive: true, force: true });
      let packages = 0;
      if (ref.packages) {
        const manifest = await this.fetchManifest(ref.packages.sha256, jobId, fetched);
        for (const entry of manifest.packages) if (entry.source.kind === 'native') nativeHere(entry); // fail first
        for (const entry of manifest.packages) {
          await this.place(entry, tmp, jobId, fetched);
          packages++;
        }
      }
      // troupe is never shipped: the job gets this node's own, the one its workers run.
      await mkdir(join(tmp, 'node_modules'), { recursive: true });
      await rm(join(tmp, 'node_modules', 'troupe'), { recursive: true, force: true });
      await symlink(troupeRoot(), join(tmp, 'node_modules', 'troupe'), 'dir');
      await this.commit(tmp, dir);
      this.o.log?.(
        `troupe: runtime env ${key} ready in ${Date.now() - started} ms (${packages} package entries; fetched ` +
          `${formatBytes(fetched.bytes)})`,
      );
      return dir;
    } catch (e) {
      await rm(tmp, { recursive: true, force: true });
      await rm(`${tmp}.tgz`, { force: true });
      throw e;
    }
  }

  /** Puts one manifest entry at its path in the copy being made. */
  private async place(entry: PackageEntry, into: string, jobId: string | undefined, fetched: { bytes: number }) {
    const to = join(into, entry.path);
    await rm(to, { recursive: true, force: true });
    await mkdir(dirname(to), { recursive: true });
    const s = entry.source;
    if (s.kind === 'link') await symlink(s.target, to);
    else if (s.kind === 'troupe') await symlink(troupeRoot(), to, 'dir');
    else if (s.kind === 'native') await symlink(nativeHere(entry), to, 'dir');
    else await linkTree(await this.pkg(s.object, jobId, fetched), to);
  }

  /** A package's directory in the cache, fetched and unpacked once (concurrent calls share one). */
  private pkg(object: string, jobId: string | undefined, fetched: { bytes: number }): Promise<string> {
    const dir = join(this.dir, 'packages', encodeURIComponent(object));
    const key = `pkg:${dir}`;
    let p = this.making.get(key);
    if (!p) {
      p = (async () => {
        if (existsSync(dir)) {
          this.touch(dir);
          return dir;
        }
        const tmp = await this.tmpPath();
        try {
          const sha = object.startsWith('pkg-sha256-') ? object.slice('pkg-sha256-'.length) : undefined;
          await this.fetch(object, `${tmp}.tgz`, jobId, fetched, sha);
          await unpack(`${tmp}.tgz`, tmp);
          await this.commit(tmp, dir);
          return dir;
        } finally {
          await rm(`${tmp}.tgz`, { force: true });
          await rm(tmp, { recursive: true, force: true });
        }
      })().finally(() => this.making.delete(key));
      this.making.set(key, p);
    }
    return p;
  }

  private async fetchManifest(sha: string, jobId: string | undefined, fetched: { bytes: number }) {
    const name = objectNames.manifest(sha);
    const bytes = await this.source.bytes(name, jobId);
    if (!bytes) throw new RuntimeEnvError(`the job's package manifest ${name} is not in the object store`);
    if (createHash('sha256').update(bytes).digest('hex') !== sha)
      throw new ProtocolError(`the package manifest ${name} does not match its hash`);
    fetched.bytes += bytes.length;
    return checkManifest(JSON.parse(new TextDecoder().decode(bytes)));
  }

  private async fetch(name: string, to: string, jobId: string | undefined, fetched: { bytes: number }, sha?: string) {
    const n = await this.source.file(name, to, jobId);
    if (n === undefined) throw new RuntimeEnvError(`${name} is not in the object store and its driver did not ship it`);
    if (sha && (await hashFile(to)).sha256 !== sha)
      throw new ProtocolError(`${name} from the object store does not match its sha256`);
    fetched.bytes += n;
  }

  private async tmpPath(): Promise<string> {
    await mkdir(join(this.dir, 'tmp'), { recursive: true });
    return join(this.dir, 'tmp', randomBytes(8).toString('hex'));
  }

  /** Renames a finished directory into place; another process that got there first wins, and ours goes. */
  private async commit(tmp: string, dir: string): Promise<void> {
    await mkdir(dirname(dir), { recursive: true });
    try {
      await rename(tmp, dir);
    } catch (e) {
      if (!existsSync(dir)) throw e;
      await rm(tmp, { recursive: true, force: true });
    }
    this.entries.set(dir, { bytes: await du(dir), lastUsed: Date.now(), holds: 0 });
    await this.evict(dir);
  }

  private touch(dir: string): void {
    const e = this.entries.get(dir);
    if (e) e.lastUsed = Date.now();
    else this.entries.set(dir, { bytes: 0, lastUsed: Date.now(), holds: 0 });
    const now = new Date();
    void utimes(dir, now, now).catch(() => undefined); // for the next daemon's load()
  }

  /** What an earlier daemon left: its entries, by last use (mtime). Once, before anything is made. */
  private load(): Promise<void> {
    this.loaded ??= this.loadOnce();
    return this.loaded;
  }

  private async loadOnce(): Promise<void> {
    for (const sub of ['envs', 'packages']) {
      const parent = join(this.dir, sub);
      for (const name of await readdir(parent).catch(() => [] as string[])) {
        const dir = join(parent, name);
        if (this.entries.has(dir)) continue;
        const st = await stat(dir).catch(() => undefined);
        if (st) this.entries.set(dir, { bytes: await du(dir), lastUsed: st.mtimeMs, holds: 0 });
      }
    }
    await rm(join(this.dir, 'tmp'), { recursive: true, force: true }); // half-made copies of a daemon that died
  }

  /** While over maxBytes: the least recently used entry that no live worker uses (and not `keep`) goes. */
  private async evict(keep: string): Promise<void> {
    let total = [...this.entries.values()].reduce((n, e) => n + e.bytes, 0);
    while (total > this.maxBytes) {
      let victim: [string, Entry] | undefined;
      for (const [dir, e] of this.entries)
        if (dir !== keep && e.holds === 0 && !(victim && victim[1].lastUsed <= e.lastUsed)) victim = [dir, e];
      if (!victim) return;
      this.entries.delete(victim[0]);
      total -= victim[1].bytes;
      await rm(victim[0], { recursive: true, force: true });
    }
  }

  /** For tests and status: the entries the cache holds. */
  list(): Array<{ dir: string; bytes: number; lastUsed: number; inUse: boolean }> {
    return [...this.entries].map(([dir, e]) => ({ dir, bytes: e.bytes, lastUsed: e.lastUsed, inUse: e.holds > 0 }));
  }
}

/** This node's installation of a package with native parts, which must be the version the job has. */
function nativeHere(entry: PackageEntry): string {
  const mine = installedPackage(entry.name!);
  if (!mine || mine.version !== entry.version)
    throw new RuntimeEnvError(
      `${entry.name}@${entry.version} (at ${entry.path}) has native parts, which are not shipped: a node uses ` +
        `its own installation, and this one has ${mine ? `${entry.name}@${mine.version}` : `no ${entry.name}`}. ` +
        `Install ${entry.name}@${entry.version} next to troupe on every node`,
    );
  return mine.dir;
}

/** Bytes of the files under dir. */
async function du(dir: string): Promise<number> {
  let n = 0;
  for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = join(dir, e.name);
    if (e.isDirectory()) n += await du(p);
    else if (e.isFile()) n += (await lstat(p)).size;
  }
  return n;
}

/** Recreates `src` at `dest` with hard links to its files (a copy where they are on other file systems). */
async function linkTree(src: string, dest: string): Promise<void> {
  await mkdir(dest, { recursive: true });
  for (const e of await readdir(src, { withFileTypes: true })) {
    const from = join(src, e.name);
    const to = join(dest, e.name);
    if (e.isDirectory()) await linkTree(from, to);
    else if (e.isSymbolicLink()) await symlink(await readlink(from), to);
    else if (e.isFile())
      await link(from, to).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'EXDEV' || err.code === 'EPERM' || err.code === 'EMLINK') return copyFile(from, to);
        throw err;
      });
  }
}
